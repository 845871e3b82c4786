"""Intonation kept across the dub: pitch contour of expressive lines, source vs dubbed, measured with Praat.

    .venv/bin/python benchmarks/intonation.py [--weights 1.0,0.8,0.6] [--skip-cer]

Source: English lines (questions, exclamations, apologies) spoken by the bundled Piper voice. Dubs: their
translations by espeak-ng, by Kokoro jm_kumo with its own intonation (`voice.intonation: voice`) and by Kokoro with
the source line's intonation imposed (`voice.intonation: source`, `tasks.voice.SourceIntonation` over the Piper
line, at each `--weights` share of the source contour). Two sets: TUNE (the twelve Spanish lines the transfer's
settings were chosen on) and HELD_OUT (twelve other lines, in Spanish and German, never used to tune anything).

The measure is the benchmark's own, independent of the transfer's code: Praat (parselmouth) autocorrelation pitch
75-500 Hz; each line's voiced F0 in semitones is resampled to 50 points over its voiced span. Per voice: the median
Pearson correlation of the dub's contour with the source's, the median ratio of their ranges (5th-95th
percentile, semitones), also with the source contour taken from the source over a music bed (`--bed-db`
below the speech, as from the original mix in voice-over mode), and artefact checks: median HNR (Praat harmonicity, dB, voiced frames) and median local
jitter (%, Praat periodic point process). CER table: back-transcription by Whisper base (as benchmarks/languages.py)
of the four sentences of benchmarks/languages.py in es, fr and de and of the held-out lines, with and without the
transfer (source contours from Piper speaking the English sentences).
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

TUNE = [
    ("Are you coming with us tonight?", {"es": "¿Vienes con nosotros esta noche?"}),
    ("I can't believe we actually won!", {"es": "¡No puedo creer que de verdad ganamos!"}),
    ("I'm so sorry, I didn't mean to hurt you.", {"es": "Lo siento mucho, no quería hacerte daño."}),
    ("Where did you put my keys?", {"es": "¿Dónde pusiste mis llaves?"}),
    ("That was the best concert ever!", {"es": "¡Fue el mejor concierto de todos!"}),
    ("Please forgive me, it was my fault.", {"es": "Por favor, perdóname, fue culpa mía."}),
    ("Do you really think she will call?", {"es": "¿De verdad crees que ella va a llamar?"}),
    ("Watch out, the car is coming!", {"es": "¡Cuidado, viene el coche!"}),
    ("I apologise for the long delay.", {"es": "Pido disculpas por el largo retraso."}),
    ("Why didn't you tell me sooner?", {"es": "¿Por qué no me lo dijiste antes?"}),
    ("What a wonderful surprise!", {"es": "¡Qué sorpresa tan maravillosa!"}),
    ("Excuse me, could you help me, please?", {"es": "Disculpe, ¿me podría ayudar, por favor?"}),
]
HELD_OUT = [
    ("Is this seat taken?", {"es": "¿Está ocupado este asiento?", "de": "Ist dieser Platz besetzt?"}),
    ("We finally made it to the top!", {"es": "¡Por fin llegamos a la cima!", "de": "Wir haben es endlich nach oben geschafft!"}),
    ("I'm really sorry about your father.", {"es": "Siento mucho lo de tu padre.", "de": "Das mit deinem Vater tut mir wirklich leid."}),
    ("Have you ever been to Paris?", {"es": "¿Alguna vez has estado en París?", "de": "Warst du schon einmal in Paris?"}),
    ("Stop, don't touch that!", {"es": "¡Para, no toques eso!", "de": "Halt, fass das nicht an!"}),
    ("Sorry, I completely forgot your birthday.", {"es": "Perdona, olvidé por completo tu cumpleaños.",
                                                   "de": "Entschuldige, ich habe deinen Geburtstag völlig vergessen."}),
    ("Can you hear me now?", {"es": "¿Me oyes ahora?", "de": "Kannst du mich jetzt hören?"}),
    ("This is absolutely amazing!", {"es": "¡Esto es absolutamente increíble!", "de": "Das ist absolut unglaublich!"}),
    ("Did you lock the front door?", {"es": "¿Cerraste la puerta de entrada?", "de": "Hast du die Haustür abgeschlossen?"}),
    ("I didn't mean to wake you, forgive me.", {"es": "No quería despertarte, perdóname.",
                                                "de": "Ich wollte dich nicht wecken, verzeih mir."}),
    ("How could you do this to me?", {"es": "¿Cómo pudiste hacerme esto?", "de": "Wie konntest du mir das antun?"}),
    ("Happy birthday, my dear friend!", {"es": "¡Feliz cumpleaños, querido amigo!", "de": "Alles Gute zum Geburtstag, mein lieber Freund!"}),
]
POINTS = 50


def contour(path: Path) -> np.ndarray | None:
    import parselmouth

    pitch = parselmouth.Sound(str(path)).to_pitch(pitch_floor=75, pitch_ceiling=500)
    f0 = pitch.selected_array["frequency"]
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) < 5:
        return None
    span = np.arange(voiced[0], voiced[-1] + 1)
    semitones = np.interp(span, voiced, 12 * np.log2(f0[voiced] / 100.0))
    return np.interp(np.linspace(0, len(span) - 1, POINTS), np.arange(len(span)), semitones)


def spread(values: np.ndarray) -> float:
    return float(np.percentile(values, 95) - np.percentile(values, 5))


def voice_quality(path: Path) -> tuple[float, float]:
    """(HNR dB over voiced frames, local jitter %) of a clip: PSOLA artefacts show as lower HNR, higher jitter."""
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(str(path))
    hnr = call(sound, "To Harmonicity (cc)", 0.01, 75, 0.1, 1.0).values[0]
    pulses = call(sound, "To PointProcess (periodic, cc)", 75, 500)
    jitter = call(pulses, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3)
    return float(np.median(hnr[hnr > -200])), 100 * float(jitter)


CPU: dict[str, float] = {}  # label -> cpu seconds of making its lines (contour + synthesis + transfer)


def dubs(lines, language, source_synth, voices, folder: Path) -> dict[str, list[Path]]:
    """label -> one WAV per line; the sources under label 'source'."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {"source": []}
    CPU.clear()
    for i, (english, translations) in enumerate(lines):
        out["source"].append(source_synth.synthesize(english, folder / f"source{i}.wav").wav)
        for label, make in voices.items():
            began = time.process_time()
            synth = make(out["source"][-1])
            out.setdefault(label, []).append(synth.synthesize(translations[language], folder / f"{label}{i}.wav").wav)
            CPU[label] = CPU.get(label, 0.0) + time.process_time() - began
    return out


def table(title: str, wavs: dict[str, list[Path]]) -> None:
    sources = [contour(p) for p in wavs["source"]]
    print(f"\n{title}\n\n| voice | median correlation | median range ratio | HNR dB | jitter % | cpu s/line | lines measured |")
    print("|---|---|---|---|---|---|---|")
    for label, paths in wavs.items():
        if label == "source":
            continue
        correlations, ratios, quality = [], [], []
        for src, path in zip(sources, paths, strict=True):
            quality.append(voice_quality(path))
            dub = contour(path)
            if dub is None or src is None:
                continue
            correlations.append(float(np.corrcoef(src, dub)[0, 1]))
            ratios.append(spread(dub) / max(spread(src), 1e-6))
        print(f"| {label} | {statistics.median(correlations):.2f} | {statistics.median(ratios):.2f} | "
              f"{statistics.median(q[0] for q in quality):.1f} | {statistics.median(q[1] for q in quality):.2f} | "
              f"{CPU[label] / len(paths):.3f} | {len(correlations)}/{len(paths)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="1.0,0.8,0.6", help="shares of the source contour to measure")
    parser.add_argument("--bed-db", type=float, default=10.0, help="speech-to-music ratio of the music condition")
    parser.add_argument("--skip-cer", action="store_true")
    args = parser.parse_args()

    from benchmarks.languages import music_bed, to16
    from dubforge.media import prosody
    from dubforge.media.audio import read_wav
    from dubforge.models.base import create_synthesizer
    from dubforge.tasks.voice import INTONATION_WEIGHT, SourceIntonation

    work = Path(tempfile.mkdtemp(prefix="dubforge-intonation-"))
    source = create_synthesizer("piper", language="en")
    weights = [float(w) for w in args.weights.split(",")]
    print(f"# load average {os.getloadavg()[0]:.1f}; stage default weight {INTONATION_WEIGHT}")

    def with_source(kokoro, weight: float, bed_db: float | None = None):
        def make(source_wav: Path):
            audio, rate = read_wav(source_wav)
            audio = audio.mean(axis=1)
            if bed_db is not None:  # the source actor over music, as the original mix in voice-over mode
                audio, rate = to16(source_wav), 16_000
                audio = audio + music_bed(len(audio)) * np.sqrt(np.mean(audio**2)) * 10 ** (-bed_db / 20)
            found = prosody.source_contour(audio, rate)
            return kokoro if found is None else SourceIntonation(kokoro, found, weight)
        return make

    def voices(language: str) -> dict:
        espeak, kokoro = create_synthesizer("espeak", language=language), create_synthesizer("kokoro", language=language)
        chosen = {"espeak": lambda _: espeak, "kokoro jm_kumo": lambda _: kokoro}
        chosen |= {f"kokoro + source intonation w={w:g}": with_source(kokoro, w) for w in weights}
        chosen[f"kokoro + source intonation, source over music {args.bed_db:g} dB down"] = with_source(
            kokoro, INTONATION_WEIGHT, args.bed_db)
        return chosen

    table("TUNE set, es (settings chosen on it)", dubs(TUNE, "es", source, voices("es"), work / "tune-es"))
    for language in ("es", "de"):
        table(f"HELD_OUT set, {language} (never tuned on)",
              dubs(HELD_OUT, language, source, voices(language), work / f"held-{language}"))
    print(f"# load average {os.getloadavg()[0]:.1f}")
    if args.skip_cer:
        return
    cer_table(source, work, with_source)


def cer_table(source, work: Path, with_source) -> None:
    from benchmarks.languages import SENTENCES, hear, to16
    from dubforge.core.textscore import error_rates
    from dubforge.models.base import create_synthesizer
    from dubforge.models.whisper_asr import FasterWhisperTranscriber
    from dubforge.tasks.voice import INTONATION_WEIGHT

    whisper = FasterWhisperTranscriber(model="base")
    cases = [(lang, "languages.py sentences", list(zip(SENTENCES["en"], SENTENCES[lang], strict=True)))
             for lang in ("es", "fr", "de")]
    cases += [(lang, "held-out lines", [(en, tr[lang]) for en, tr in HELD_OUT]) for lang in ("es", "de")]
    print("\n| language | text | CER voice intonation | CER source intonation |\n|---|---|---|---|")
    for language, label, pairs in cases:
        kokoro = create_synthesizer("kokoro", language=language)
        folder = work / "cer" / language / label.split()[0]
        folder.mkdir(parents=True, exist_ok=True)
        scores = []
        for variant in ("voice", "source"):
            pieces = [np.zeros(8000, np.float32)]
            for i, (english, translated) in enumerate(pairs):
                synth = kokoro
                if variant == "source":
                    synth = with_source(kokoro, INTONATION_WEIGHT)(source.synthesize(english, folder / f"en{i}.wav").wav)
                pieces += [to16(synth.synthesize(translated, folder / f"{variant}{i}.wav").wav),
                           np.zeros(6400, np.float32)]
            heard = hear(whisper, np.concatenate(pieces), language, folder)
            scores.append(error_rates(" ".join(t for _, t in pairs), heard, language)[1])
        print(f"| {language} | {label} | {scores[0]:.3f} | {scores[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
