"""Voices and ears per language: how well each TTS back-transcribes, and how the Whisper models compare.

    .venv/bin/python benchmarks/languages.py [--languages es,fr,...] [--voices jm_kumo,jf_alpha] [--bed-db 10]

TTS table: four held-out sentences per language (never used to tune anything), spoken by espeak-ng and by
Kokoro voices (bundled styles and blends), clean and over a synthesised music bed `--bed-db` dB below the
speech, then back-transcribed by Whisper base in that language; WER and CER after the normaliser of
`dubforge.core.textscore`. `coverage` is the share of espeak-ng's IPA symbols that Kokoro's vocabulary holds
(below ~0.97 Kokoro cannot say the language). RTF = synthesis seconds / audio seconds (warm).

ASR table: English sentences spoken by the bundled Piper voice, transcribed by tiny.en and by base (WER, RTF),
and language identification by base on the Kokoro speech of every language.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DO_NOT_TRACK", "1")

SENTENCES = {
    "es": ["El tren sale de la estación a las ocho de la mañana.",
           "¿Has visto las llaves del coche que dejé en la mesa?",
           "Mi hermana trabaja en un hospital cerca del río.",
           "Lo siento mucho, no sabía que estabas esperando."],
    "pt-BR": ["O trem sai da estação às oito horas da manhã.",
              "Você viu as chaves do carro que deixei na mesa?",
              "Minha irmã trabalha num hospital perto do rio.",
              "Desculpe, eu não sabia que você estava esperando."],
    "fr": ["Le train quitte la gare à huit heures du matin.",
           "As-tu vu les clés de la voiture que j'ai laissées sur la table ?",
           "Ma sœur travaille dans un hôpital près de la rivière.",
           "Je suis désolé, je ne savais pas que tu attendais."],
    "it": ["Il treno parte dalla stazione alle otto del mattino.",
           "Hai visto le chiavi della macchina che ho lasciato sul tavolo?",
           "Mia sorella lavora in un ospedale vicino al fiume.",
           "Mi dispiace molto, non sapevo che stessi aspettando."],
    "de": ["Der Zug verlässt den Bahnhof um acht Uhr morgens.",
           "Hast du die Autoschlüssel gesehen, die ich auf dem Tisch gelassen habe?",
           "Meine Schwester arbeitet in einem Krankenhaus in der Nähe des Flusses.",
           "Es tut mir leid, ich wusste nicht, dass du wartest."],
    "en": ["The train leaves the station at eight in the morning.",
           "Have you seen the car keys I left on the table?",
           "My sister works in a hospital near the river.",
           "I'm so sorry, I didn't know you were waiting."],
    "hi": ["ट्रेन सुबह आठ बजे स्टेशन से निकलती है।",
           "क्या तुमने गाड़ी की चाबियाँ देखीं जो मैंने मेज़ पर छोड़ी थीं?",
           "मेरी बहन नदी के पास एक अस्पताल में काम करती है।",
           "मुझे बहुत खेद है, मुझे नहीं पता था कि तुम इंतज़ार कर रहे थे।"],
    "ja": ["電車は朝八時に駅を出発します。",
           "テーブルに置いた車の鍵を見ましたか？",
           "姉は川の近くの病院で働いています。",
           "本当にごめんなさい、待っているとは知りませんでした。"],
    "nl": ["De trein vertrekt om acht uur 's ochtends van het station.",
           "Heb je de autosleutels gezien die ik op tafel heb laten liggen?",
           "Mijn zus werkt in een ziekenhuis bij de rivier.",
           "Het spijt me, ik wist niet dat je aan het wachten was."],
    "ca": ["El tren surt de l'estació a les vuit del matí.",
           "Has vist les claus del cotxe que vaig deixar a la taula?",
           "La meva germana treballa en un hospital a prop del riu.",
           "Ho sento molt, no sabia que m'estaves esperant."],
    "ro": ["Trenul pleacă din gară la ora opt dimineața.",
           "Ai văzut cheile mașinii pe care le-am lăsat pe masă?",
           "Sora mea lucrează la un spital lângă râu.",
           "Îmi pare rău, nu știam că aștepți."],
    "pl": ["Pociąg odjeżdża ze stacji o ósmej rano.",
           "Czy widziałeś kluczyki do samochodu, które zostawiłem na stole?",
           "Moja siostra pracuje w szpitalu nad rzeką.",
           "Bardzo przepraszam, nie wiedziałem, że czekasz."],
    "sv": ["Tåget lämnar stationen klockan åtta på morgonen.",
           "Har du sett bilnycklarna som jag lämnade på bordet?",
           "Min syster arbetar på ett sjukhus nära floden.",
           "Förlåt, jag visste inte att du väntade."],
}
RATE = 16_000
MIN_COVERAGE = 0.97


def music_bed(n: int, seed: int = 0) -> np.ndarray:
    """Chords (sawtooth-ish partials) changing every 2 s plus noise hits on the beat: a stand-in M&E bed."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    bed = np.zeros(n, np.float32)
    for k, start in enumerate(range(0, n, 2 * RATE)):
        span = slice(start, min(n, start + 2 * RATE))
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        for ratio in (1, 1.26, 1.5, 2):
            for h in (1, 2, 3):
                bed[span] += np.sin(2 * np.pi * root * ratio * h * t[span]) / h
    for beat in range(0, n, RATE // 2):
        hit = rng.standard_normal(min(2000, n - beat)) * np.exp(-np.arange(min(2000, n - beat)) / 300)
        bed[beat:beat + len(hit)] += 2 * hit
    return bed / np.sqrt(np.mean(bed**2))


def to16(path: Path) -> np.ndarray:
    from dubforge.media.audio import read_wav, resample, to_channels

    audio, rate = read_wav(path)
    return resample(to_channels(audio, 1), rate, RATE)[:, 0]


def speak(synth, sentences: list[str], folder: Path) -> tuple[np.ndarray, float]:
    """The sentences spoken one after another with 0.4 s pauses (16 kHz) and the warm synthesis RTF."""
    pieces, seconds, audio_seconds = [np.zeros(RATE // 2, np.float32)], 0.0, 0.0
    for i, sentence in enumerate(sentences):
        began = time.perf_counter()
        speech = synth.synthesize(sentence, folder / f"s{i}.wav")
        seconds += time.perf_counter() - began
        audio_seconds += speech.duration
        pieces += [to16(speech.wav), np.zeros(int(0.4 * RATE), np.float32)]
    return np.concatenate(pieces), seconds / audio_seconds


def hear(whisper, audio: np.ndarray, language: str, folder: Path) -> str:
    from dubforge.media.audio import write_wav

    wav = write_wav(folder / "heard.wav", audio[:, None] * (0.5 / max(1e-6, float(np.max(np.abs(audio))))), RATE)
    return " ".join(s.text for s in whisper.transcribe(wav, language).segments)


def coverage(language: str, sentences: list[str]) -> float:
    from dubforge.models import kokoro_tts
    from dubforge.models.espeak_tts import text_to_ipa

    if language == "ja":
        return 1.0
    vocab, _ = kokoro_tts._assets()
    ipa = "".join(text_to_ipa(sentences, language)).replace("^", "").replace(" ", "").replace("-", "")
    kept = kokoro_tts.to_tokens(ipa, vocab)
    return len(kept) / max(1, len(ipa))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", default=",".join(SENTENCES))
    parser.add_argument("--voices", default="jm_kumo,jf_alpha")
    parser.add_argument("--bed-db", type=float, default=10.0, help="speech-to-music RMS ratio of the bed condition")
    parser.add_argument("--skip-asr", action="store_true")
    parser.add_argument("--asr-only", action="store_true", help="only the English tiny.en / base comparison")
    parser.add_argument("--no-espeak", action="store_true", help="Kokoro voices only (a second pass over more voices)")
    args = parser.parse_args()

    import onnxruntime

    from dubforge.core.textscore import error_rates
    from dubforge.models import kokoro_tts
    from dubforge.models.espeak_tts import EspeakSynthesizer
    from dubforge.models.whisper_asr import FasterWhisperTranscriber
    print(f"# {os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}; Whisper base int8 beam 1 as the ear")
    whisper = FasterWhisperTranscriber(model="base")
    voices = args.voices.split(",")
    work = Path(tempfile.mkdtemp(prefix="dubforge-languages-"))
    rows, detection = [], []
    for language in [] if args.asr_only else args.languages.split(","):
        sentences = SENTENCES[language]
        reference = " ".join(sentences)
        cover = coverage(language, sentences)
        key = kokoro_tts.kokoro_language(language) or language.split("-")[0]
        kokoro_tts.VOICES.setdefault(key, kokoro_tts.VOICES["es"])  # measure languages not yet enabled too
        candidates = [] if args.no_espeak else [("espeak", EspeakSynthesizer(language))]
        if cover >= MIN_COVERAGE:  # below, Kokoro would drop sounds: not worth hearing
            candidates += [(f"kokoro {v}", kokoro_tts.KokoroSynthesizer(language, name=v)) for v in voices]
        for label, synth in candidates:
            folder = work / language / label.replace(" ", "_")
            folder.mkdir(parents=True)
            synth.synthesize(sentences[0], folder / "warm.wav")
            audio, rtf = speak(synth, sentences, folder)
            wer, cer = error_rates(reference, hear(whisper, audio, language, folder), language)
            bed = music_bed(len(audio)) * np.sqrt(np.mean(audio**2)) * 10 ** (-args.bed_db / 20)
            bwer, bcer = error_rates(reference, hear(whisper, audio + bed, language, folder), language)
            rows.append((language, label, cover, wer, cer, bwer, bcer, rtf))
            print(f"| {language} | {label} | {cover:.2f} | {wer:.2f} | {cer:.2f} | {bwer:.2f} | {bcer:.2f} | {rtf:.2f} |",
                  flush=True)
            if label == f"kokoro {voices[0]}":
                from dubforge.media.audio import write_wav
                found = whisper.detect_language(write_wav(folder / "id.wav", audio[:, None], RATE))
                detection.append((language, *found))
        kokoro_tts.VOICES.pop(key) if key not in kokoro_tts.LANGUAGES else None

    print("\n| language | voice | coverage | WER | CER | WER over bed | CER over bed | RTF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.2f} |")
    print("\nbest per language (mean of clean and bed CER):")
    for language in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == language]
        best = min(mine, key=lambda r: r[4] + r[6])
        espeak = next((r for r in mine if r[1] == "espeak"), None)
        versus = f" vs espeak {espeak[4]:.2f}/{espeak[6]:.2f}" if espeak else ""
        print(f"  {language}: {best[1]} CER {best[4]:.2f}/{best[6]:.2f}{versus}")
    print("\n| spoken | identified | probability |")
    print("|---|---|---|")
    for language, found, p in detection:
        print(f"| {language} | {found} | {p:.2f} |")

    if args.skip_asr:
        return
    from tests.media import speak_english

    print("\n| English ASR | WER | RTF (warm, median of 3) |")
    print("|---|---|---|")
    english = [
        "The committee postponed its decision until the next meeting in October.",
        "The children need warm blankets and some water tonight.",
        "Honestly, I never expected the old bridge to survive the flood.",
        "Our neighbours grow tomatoes, peppers and beans behind the garage.",
    ]
    spoken = speak_english(" ".join(english), work / "english.wav", lead=0.5, tail=0.5, gap=0.5)
    for model in ("tiny.en", "base"):
        asr = FasterWhisperTranscriber(model=model)
        asr.transcribe(spoken.path, "en")
        times, text = [], ""
        for _ in range(3):
            began = time.perf_counter()
            text = " ".join(s.text for s in asr.transcribe(spoken.path, "en").segments)
            times.append(time.perf_counter() - began)
        wer, _ = error_rates(" ".join(english), text, "en")
        print(f"| {model} | {wer:.3f} | {statistics.median(times) / spoken.duration:.3f} |")


if __name__ == "__main__":
    main()
