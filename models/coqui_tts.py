"""Coqui TTS (coqui-tts) with local weights: any model folder (model.pth + config.json), XTTS-v2 voice
cloning from reference clips, and phoneme timings for lip-sync.

Timing: models with a duration predictor (VITS and relatives) give per-token durations, used directly.
Others (XTTS: autoregressive) are aligned after synthesis: English with pocketsphinx forced alignment;
other languages get the espeak phoneme sequence spread over the voiced part in proportion to espeak's
own durations (coarser; noted in docs/neural.md).

Cloning: `reference_clips()` cuts 6-10 s of clean speech per speaker from the separated dialogue stem.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from dubforge.core.contracts import Phoneme, Segment, Speech
from dubforge.core.errors import StageError
from dubforge.core.files import atomic_path, fingerprint
from dubforge.core.languages import base_language
from dubforge.core.model_store import content_hash, resolve
from dubforge.media.audio import SPEECH_RATE, read_wav, resample, to_channels, write_wav
from dubforge.models.base import Synthesizer
from dubforge.models.espeak_tts import EspeakSynthesizer
from dubforge.models.sphinx_align import PocketsphinxAligner

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.RLock()
_PAUSE = set(" .,;:!?¡¿—–-…\"'()")
XTTS_NAMES = {"xtts_v2": "tts_models/multilingual/multi-dataset/xtts_v2"}


def model_files(folder: Path) -> tuple[Path, Path]:
    folder = Path(folder)
    config = folder / "config.json"
    weights = next((folder / n for n in ("model.pth", "model_file.pth", "best_model.pth") if (folder / n).is_file()), None)
    if weights is None or not config.is_file():
        raise StageError(f"{folder}: expected a Coqui model folder with model.pth (or model_file.pth) and config.json")
    return weights, config


def _load(folder: Path, device: str):
    def build():
        from TTS.api import TTS

        weights, config = model_files(folder)
        is_xtts = '"xtts"' in config.read_text(encoding="utf-8")
        try:
            tts = TTS(model_path=str(folder if is_xtts else weights), config_path=str(config), progress_bar=False)
        except Exception as exc:
            raise StageError(f"coqui cannot load {folder}: {type(exc).__name__}: {exc}") from exc
        return tts.to(device)

    with _LOCK:
        key = (str(folder), device)
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def check_model(path: Path) -> str:
    tts = _load(Path(path), "cpu")
    model = tts.synthesizer.tts_model
    return (f"{type(model).__name__}, {tts.synthesizer.output_sample_rate} Hz, "
            f"speakers={len(tts.speakers or [])}, languages={len(tts.languages or [])}")


def _fetch(name: str) -> Path:
    """Online: coqui's ModelManager downloads a published model; returns its folder."""
    from TTS.utils.manage import ModelManager

    path, _config, _item = ModelManager(progress_bar=False).download_model(XTTS_NAMES.get(name, name))
    path = Path(path)
    return path if path.is_dir() else path.parent


class CoquiSynthesizer(Synthesizer):
    name = "coqui"
    needs_weights = True

    def __init__(self, language: str, name: str | None = None, model: str | Path = "xtts_v2", rate: float = 1.0,
                 clone: bool = False, reference: Path | Sequence[Path] | None = None, registry: Path | None = None,
                 device: str = "auto", seed: int = 0):
        if rate <= 0:
            raise ValueError(f"coqui: rate must be positive, got {rate}")

        self.language, self.speaker, self.base_rate, self.seed = language, name, float(rate), int(seed)
        self.folder = resolve(str(model), "coqui", registry, fetch=_fetch)
        refs = [reference] if isinstance(reference, (str, Path)) else list(reference or [])
        self.reference = [Path(r) for r in refs]
        self.clone = bool(clone)
        if self.clone and not self.reference:
            raise ValueError("coqui: clone needs reference clips (see reference_clips(): cut from the dialogue stem)")
        for ref in self.reference:
            if not ref.is_file():
                raise FileNotFoundError(f"coqui: reference clip not found: {ref}")
        import torch

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._voice: tuple[Any, tuple[Any, Any]] | None = None  # (model, XTTS conditioning from the references)

    def fingerprint(self) -> str:

        return fingerprint("coqui", version("coqui-tts"), content_hash(self.folder), self.language, self.speaker,
                           self.base_rate, self.clone, self.reference, self.seed)

    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        import torch

        if rate <= 0:
            raise ValueError(f"coqui: rate must be positive, got {rate}")
        tts = _load(self.folder, self.device)
        synth = tts.synthesizer
        model = synth.tts_model
        sample_rate = int(synth.output_sample_rate)
        speed = self.base_rate * rate
        language = base_language(self.language) if tts.is_multi_lingual else None
        with _LOCK, torch.no_grad():
            torch.manual_seed(self.seed)
            if hasattr(model, "length_scale") and hasattr(model, "duration_predictor"):
                audio, spans = _with_durations(synth, text, speed, self.speaker, language)
            elif self.clone and _is_xtts(model):
                if self._voice is None or self._voice[0] is not model:
                    self._voice = (model, xtts_conditioning(model, self.reference))
                audio, spans = _xtts_speak(synth, text, language, self._voice[1], speed), None
            else:
                kwargs: dict[str, Any] = {"language": language}
                if self.clone:
                    kwargs["speaker_wav"] = [str(r) for r in self.reference]
                elif self.speaker is not None:
                    kwargs["speaker"] = self.speaker
                if _is_xtts(model):
                    kwargs["speed"] = speed
                audio = np.asarray(tts.tts(text, **kwargs), np.float32)
                spans = None
        write_wav(Path(out_wav), audio[:, None], sample_rate)
        duration = len(audio) / sample_rate
        phonemes = _phonemes(spans, sample_rate) if spans else align_phonemes(Path(out_wav), text, self.language)
        return Speech(wav=Path(out_wav), sample_rate=sample_rate, duration=duration, phonemes=phonemes)


def _is_xtts(model) -> bool:
    return "xtts" in type(model).__name__.lower()


def xtts_conditioning(model, clips: Sequence[Path]):
    """XTTS voice from reference clips: (GPT conditioning latents, speaker embedding), as coqui's
    `Xtts.get_conditioning_latents` computes them with the model config's cloning settings, but with the
    clips read by dubforge: coqui reads them with torchaudio.load, which goes through torchcodec and needs
    FFmpeg's shared libraries (the neural venv has none; dubforge's ffmpeg is a static binary)."""
    import torch

    config, rate = model.config, 22050  # XTTS conditions on 22.05 kHz audio
    audios, embeddings = [], []
    for clip in clips:
        data, source_rate = read_wav(Path(clip))
        mono = np.clip(resample(to_channels(data, 1), source_rate, rate)[:, 0], -1.0, 1.0)
        mono = mono[: rate * int(config.max_ref_len)]
        if config.sound_norm_refs:
            mono = mono / max(float(np.abs(mono).max()), 1e-9) * 0.75
        wav = torch.from_numpy(np.ascontiguousarray(mono, np.float32))[None].to(model.device)
        embeddings.append(model.get_speaker_embedding(wav, rate))
        audios.append(wav)
    latents = model.get_gpt_cond_latents(torch.cat(audios, dim=-1), rate, length=int(config.gpt_cond_len),
                                         chunk_length=int(config.gpt_cond_chunk_len))
    return latents, torch.stack(embeddings).mean(dim=0)


def _xtts_speak(synth, text: str, language: str | None, voice, speed: float) -> np.ndarray:
    """XTTS inference sentence by sentence (coqui's splitting), with the model config's sampling settings;
    sentences are joined with coqui's pause (10000 samples), without one after the last."""
    model = synth.tts_model
    config = model.config
    latents, embedding = voice
    pieces: list[Any] = []
    for sentence in synth.split_into_sentences(text, language):
        out = model.inference(sentence, language, latents, embedding, temperature=config.temperature,
                              length_penalty=config.length_penalty, repetition_penalty=config.repetition_penalty,
                              top_k=config.top_k, top_p=config.top_p, speed=speed)
        if pieces:
            pieces.append(np.zeros(10_000, np.float32))
        pieces.append(np.asarray(out["wav"], np.float32).reshape(-1))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def _with_durations(synth, text: str, speed: float, speaker: str | None, language: str | None):
    """VITS-style models: run inference ourselves to keep the per-token durations (frames of hop_length)."""
    import torch

    model = synth.tts_model
    config = synth.tts_config
    aux: dict[str, Any] = {"x_lengths": None, "d_vectors": None, "speaker_ids": None, "language_ids": None}
    if speaker is not None:
        manager = model.speaker_manager
        if manager is None or speaker not in manager.name_to_id:
            known = ", ".join(sorted(manager.name_to_id)) if manager else "none"
            raise StageError(f"coqui model has no speaker {speaker!r} (speakers: {known})")
        aux["speaker_ids"] = torch.tensor([manager.name_to_id[speaker]], device=model.device)
    if language is not None and getattr(model, "language_manager", None) is not None:
        aux["language_ids"] = torch.tensor([model.language_manager.name_to_id[language]], device=model.device)
    ids = model.tokenizer.text_to_ids(text, language=language)
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    aux["x_lengths"] = torch.tensor([len(ids)], device=model.device)
    old = model.length_scale
    model.length_scale = old / speed
    try:
        out = model.inference(x, aux_input=aux)
    finally:
        model.length_scale = old
    audio = out["model_outputs"][0].reshape(-1).float().cpu().numpy()
    frames = out["durations"][0].reshape(-1).cpu().numpy().astype(np.int64)
    hop = int(config.audio.hop_length)
    symbols = [model.tokenizer.characters.id_to_char(int(i)) for i in ids]
    spans, pos = [], 0
    for symbol, count in zip(symbols, frames):
        spans.append((symbol, pos, pos + int(count) * hop))
        pos += int(count) * hop
    return audio[:pos] if pos <= len(audio) else np.pad(audio, (0, pos - len(audio))), spans


def _phonemes(spans: list[tuple[str, int, int]], sample_rate: int) -> tuple[Phoneme, ...]:
    """Token spans -> phones: blanks/padding/spaces extend the previous phone, punctuation is a pause '_'."""
    merged: list[list] = []
    for symbol, start, end in spans:
        if end <= start:
            continue
        special = symbol.startswith("<") and symbol.endswith(">")
        if (special or symbol == " ") and merged:
            merged[-1][2] = end
            continue
        symbol = "_" if special or symbol in _PAUSE else symbol
        if symbol == "_" and merged and merged[-1][0] == "_":
            merged[-1][2] = end
            continue
        merged.append([symbol, start, end])
    return tuple(Phoneme(symbol=s, start=a / sample_rate, end=b / sample_rate) for s, a, b in merged)


def align_phonemes(wav: Path, text: str, language: str) -> tuple[Phoneme, ...]:
    """Phoneme times for synthesised speech whose model gave none (see the module docstring)."""

    audio, rate = read_wav(wav)
    duration = len(audio) / rate
    start, end = _voiced_span(to_channels(audio, 1)[:, 0], rate)
    if base_language(language) == "en":

        with atomic_path(Path(wav).with_name(Path(wav).stem + ".16k.wav")) as tmp:
            write_wav(tmp, resample(to_channels(audio, 1), rate, SPEECH_RATE), SPEECH_RATE)
            try:
                (seg,) = PocketsphinxAligner().align(tmp, [Segment(start=start, end=end, text=text)], "en")
            except Exception:
                seg = None
        phones = [p for w in (seg.words if seg else ()) for p in w.phonemes]
        if phones:
            return tuple(phones)
    return _spread_espeak(text, language, start, end, duration)


def _voiced_span(mono: np.ndarray, rate: int) -> tuple[float, float]:
    hop = max(rate // 100, 1)
    frames = len(mono) // hop
    if frames == 0:
        return 0.0, len(mono) / rate
    rms = np.sqrt((mono[: frames * hop].reshape(frames, hop) ** 2).mean(1) + 1e-12)
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-35 / 20))
    return float(loud[0] * hop / rate), float((loud[-1] + 1) * hop / rate)


def _spread_espeak(text: str, language: str, start: float, end: float, duration: float) -> tuple[Phoneme, ...]:
    """espeak's phoneme sequence and relative durations, scaled onto [start, end]."""

    with tempfile.TemporaryDirectory() as tmp:
        guide = EspeakSynthesizer(language).synthesize(text, Path(tmp) / "guide.wav")
    phones = [p for p in guide.phonemes if p.end > p.start]
    if not phones:
        return (Phoneme(symbol="_", start=0.0, end=duration),)
    g0, g1 = phones[0].start, phones[-1].end
    scale = (end - start) / max(g1 - g0, 1e-6)
    return tuple(Phoneme(symbol=p.symbol, start=round(start + (p.start - g0) * scale, 4),
                         end=round(start + (p.end - g0) * scale, 4)) for p in phones)


def reference_clips(dialogue_wav: Path, segments: Sequence[Segment], out_dir: Path, min_seconds: float = 6.0,
                    max_seconds: float = 10.0, rate: int = 24_000) -> dict[str, Path]:
    """Per speaker, a mono clip of 6-10 s of their cleanest solo speech from the separated dialogue stem:
    segments that overlap no other speaker, trimmed to voiced audio, ranked by estimated SNR, joined with
    short gaps. Speakers with under `min_seconds` of usable speech get no clip (the flow then asks for another voice for them)."""

    audio, source_rate = read_wav(Path(dialogue_wav))
    mono = resample(to_channels(audio, 1), source_rate, rate)[:, 0]
    by_speaker: dict[str, list[tuple[float, np.ndarray]]] = {}
    for seg in segments:
        if any(o.speaker != seg.speaker and o.start < seg.end and seg.start < o.end for o in segments):
            continue
        piece = mono[int(seg.start * rate):int(seg.end * rate)]
        if len(piece) < rate // 2:
            continue
        a, b = _voiced_span(piece, rate)
        piece = piece[int(a * rate):int(b * rate)]
        hop = rate // 100
        frames = len(piece) // hop
        if frames < 20:
            continue
        rms = np.sqrt((piece[: frames * hop].reshape(frames, hop) ** 2).mean(1) + 1e-12)
        snr = 20 * np.log10(np.percentile(rms, 90) / max(np.percentile(rms, 10), 1e-6))
        by_speaker.setdefault(seg.speaker, []).append((float(snr), piece))
    clips = {}
    gap = np.zeros(int(0.15 * rate), np.float32)
    for speaker, pieces in sorted(by_speaker.items()):
        chosen, total = [], 0.0
        for _snr, piece in sorted(pieces, key=lambda p: -p[0]):
            chosen.append(piece)
            total += len(piece) / rate
            if total >= min_seconds:
                break
        if total < min_seconds:
            continue
        clip = np.concatenate([x for p in chosen for x in (p, gap)])[: int(max_seconds * rate)]
        peak = float(np.abs(clip).max()) or 1.0
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in speaker)
        clips[speaker] = write_wav(Path(out_dir) / f"reference-{safe}.wav", (clip * (0.9 / peak))[:, None], rate)
    return clips
