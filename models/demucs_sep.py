"""Neural separation with demucs (user-supplied weights): dialogue and M&E stems for the `replace` mix.

The 48 kHz mix is read memory-mapped and separated in overlapping windows (resampled to the model's
rate, 44.1 kHz stereo for the published models), so memory stays flat in the clip length. The
dialogue is the model's `vocals` source brought back to 48 kHz; the M&E stem is the mix minus the
dialogue, so the two stems sum exactly to the mix. Windows are cross-faded over `overlap` seconds.

Weights: a registered name (`dubforge models add htdemucs DIR`, DIR holding `<sig>.th` files and an
optional bag `<name>.yaml`), a folder, or (online) a published name fetched by demucs itself.
"""

from __future__ import annotations

import ctypes
import random
import shutil
import struct
import sys
import threading
from importlib.metadata import version
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from dubforge.core.contracts import Stems
from dubforge.core.errors import StageError
from dubforge.core.files import atomic_path, fingerprint
from dubforge.core.model_store import content_hash, resolve
from dubforge.media.audio import MIX_RATE
from dubforge.models.base import Separator

_MODELS: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()
MARGIN = 0.5  # seconds of extra context each side of a window, discarded (resampler and model edges)


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(name: str, repo: Path | None) -> Any:
    """A demucs model (or bag) from a local repo folder; with no repo, demucs's own download."""
    from demucs.pretrained import get_model

    try:
        model = get_model(name, repo=Path(repo) if repo is not None else None)
    except SystemExit as exc:  # demucs calls fatal() -> sys.exit on a missing model
        raise StageError(f"demucs: no model {name!r} in {repo}: expected {name}.yaml or {name}-<hash>.th / "
                         f"{name}.th there ({exc})") from None
    return model.eval()


def check_model(path: Path) -> str:
    """`dubforge models check`: load every model in a demucs repo folder (or one .th file)."""
    path = Path(path)
    repo = path if path.is_dir() else path.parent
    names = sorted({p.stem.split("-")[0] for p in repo.glob("*.th")} | {p.stem for p in repo.glob("*.yaml")})
    if path.is_file():
        names = [path.stem.split("-")[0]]
    if not names:
        raise StageError(f"{repo}: no demucs .th or .yaml files")
    described = []
    for name in names:
        model = load_model(name, repo)
        described.append(f"{name}: {type(model).__name__} sources={list(model.sources)} {model.samplerate} Hz")
    return "; ".join(described)


def _fetch_published(name: str) -> Path:
    """Online: let demucs download `name` into torch hub's cache and return that folder."""

    import torch
    from demucs.pretrained import REMOTE_ROOT

    load_model(name, None)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    bag = Path(REMOTE_ROOT) / f"{name}.yaml"  # the bag definition ships in the demucs package
    if bag.is_file() and not (folder / bag.name).exists():
        shutil.copyfile(bag, folder / bag.name)
    return folder


class DemucsSeparator(Separator):
    name = "demucs"
    needs_weights = True

    def __init__(self, model: str = "htdemucs", repo: Path | None = None, registry: Path | None = None,
                 dialogue: str = "vocals", window: float = 30.0, overlap: float = 1.0, shifts: int = 0,
                 device: str = "auto"):
        if window <= 2 * overlap:
            raise ValueError(f"demucs: window ({window} s) must exceed twice the overlap ({overlap} s)")
        self.model_name = str(model)
        self.repo = Path(repo) if repo is not None else None
        self.registry = registry
        self.dialogue = dialogue
        self.window, self.overlap, self.shifts = float(window), float(overlap), int(shifts)
        self.device = device

    def _repo(self) -> Path:
        if self.repo is not None:
            if not self.repo.is_dir():
                raise StageError(f"demucs repo folder not found: {self.repo} (expected a folder of .th files)")
            return self.repo

        path = resolve(self.model_name, "demucs", self.registry, fetch=_fetch_published)
        return path if path.is_dir() else path.parent

    def _model(self) -> Any:
        repo = self._repo()
        key = (self.model_name, str(repo), _device(self.device))
        with _LOCK:
            if key not in _MODELS:
                model = load_model(self.model_name, repo)
                if self.dialogue not in model.sources:
                    raise StageError(f"demucs model {self.model_name!r} has no {self.dialogue!r} source "
                                     f"(sources: {', '.join(model.sources)})")
                _MODELS[key] = model.to(key[2])
            return _MODELS[key]

    def fingerprint(self) -> str:

        return fingerprint("demucs", version("demucs"), self.model_name, content_hash(self._repo()),
                           self.dialogue, self.window, self.overlap, self.shifts)

    def separate(self, mix_wav: Path, out_dir: Path) -> Stems:

        _return_large_buffers()
        mix = WavBlocks(Path(mix_wav))
        scale = _full_scale(mix.dtype)
        out_dir = Path(out_dir)
        dialogue_path, me_path = out_dir / "dialogue.wav", out_dir / "music_effects.wav"
        with atomic_path(dialogue_path) as d_tmp, atomic_path(me_path) as m_tmp:
            with FloatWavWriter(d_tmp, len(mix)) as d_out, FloatWavWriter(m_tmp, len(mix)) as m_out:
                for start, block, dialogue in self._dialogue_blocks(mix, scale):
                    d_out.write(dialogue)
                    m_out.write(block - dialogue)
        stems: dict[str, Any] = {"background": me_path, "mode": "replace", "backend": f"demucs:{self.model_name}"}
        if "dialogue" in Stems.model_fields:
            stems["dialogue"] = dialogue_path
        return Stems(**stems)

    def _dialogue_blocks(self, mix: np.ndarray | WavBlocks, scale: float):
        """Yield (start, mix block, dialogue block) in order, covering the mix exactly once."""

        import torch
        from demucs.apply import apply_model

        model = self._model()
        device = _device(self.device)
        index = list(model.sources).index(self.dialogue)
        mean, std = _stats(mix, scale)
        n = len(mix)
        hop, ov, margin = (round(x * MIX_RATE) for x in (self.window - self.overlap, self.overlap, MARGIN))
        up, down = _ratio(model.samplerate)
        pending = np.zeros((0, 2), np.float32)  # weighted dialogue of the previous window's fade-out
        random.seed(0)  # demucs's shift trick draws random offsets: keep equal inputs -> equal stems
        for k, core_start in enumerate(range(0, max(n, 1), hop)):
            a, b = max(core_start - ov, 0), min(core_start + hop + ov, n)  # window with its cross-fades
            lo, hi = max(a - margin, 0), min(b + margin, n)
            block = mix[lo:hi].astype(np.float32) / scale
            x = (_resample(block, up, down) - mean) / std
            with torch.no_grad():
                tensor = torch.from_numpy(np.ascontiguousarray(x.T))[None].to(device)
                sources = apply_model(model, tensor, shifts=self.shifts, split=True, overlap=0.25,
                                      device=device, progress=False)
            voice = sources[0, index].cpu().numpy().T * std + mean / len(model.sources)
            voice = _fit(_resample(voice, down, up), hi - lo)[a - lo:b - lo]
            weight = np.ones(b - a, np.float32)
            fade_in = min(2 * ov, b - a) if k > 0 else 0
            last = core_start + hop + ov >= n  # a later window would be cut short: finish here
            if fade_in:
                weight[:fade_in] = (np.arange(fade_in) + 0.5) / (2 * ov)
            if not last:
                weight[-2 * ov:] = np.minimum(weight[-2 * ov:], 1 - (np.arange(2 * ov) + 0.5) / (2 * ov))
            voice = voice * weight[:, None]
            voice[: len(pending)] += pending
            done = b - a if last else b - a - 2 * ov
            yield a, block[a - lo:a - lo + done], voice[:done]
            pending = voice[done:]
            if last:
                break


class WavBlocks:
    """Frames of a 48 kHz stereo WAV read on demand (`blocks[a:b]`): no mapping, so resident memory
    stays at one block however long the file is."""

    def __init__(self, path: Path):

        try:
            rate, mapped = wavfile.read(str(path), mmap=True)
        except (OSError, ValueError) as exc:
            raise StageError(f"{path}: cannot read the mix for separation: {exc}") from exc
        if rate != MIX_RATE or mapped.ndim != 2 or mapped.shape[1] != 2 or not len(mapped):
            raise StageError(f"{path}: expected {MIX_RATE} Hz stereo, got {rate} Hz, shape {mapped.shape}")
        self.path, self.dtype, self.offset = path, mapped.dtype, int(mapped.offset)
        self.length = len(mapped)
        del mapped

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, span: slice) -> np.ndarray:
        a, b, _ = span.indices(self.length)
        count = max(b - a, 0)
        data = np.fromfile(self.path, self.dtype, count=2 * count, offset=self.offset + 2 * a * self.dtype.itemsize)
        return data.reshape(count, 2)


def _return_large_buffers() -> None:
    """glibc's adaptive mmap threshold lets the per-window buffers (tens of MB) land on the heap, which
    fragments and grows with the number of windows; a fixed threshold returns them to the OS each time
    (measured: +200 MB at 120 s -> flat)."""

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB
        except (OSError, AttributeError):
            pass


def _full_scale(dtype: np.dtype) -> float:
    return {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}.get(np.dtype(dtype), 1.0)


def _stats(mix: np.ndarray | WavBlocks, scale: float, block: int = 1 << 20) -> tuple[float, float]:
    """Mean and std of the mono mix, streamed (demucs normalises each track by these)."""
    total = total_sq = 0.0
    for i in range(0, len(mix), block):
        mono = mix[i:i + block].astype(np.float64).mean(1) / scale
        total += mono.sum()
        total_sq += (mono * mono).sum()
    count = max(len(mix), 1)
    mean = total / count
    return float(mean), float(max(np.sqrt(max(total_sq / count - mean * mean, 0.0)), 1e-8))


def _ratio(model_rate: int) -> tuple[int, int]:

    g = gcd(int(model_rate), MIX_RATE)
    return int(model_rate) // g, MIX_RATE // g


def _resample(x: np.ndarray, up: int, down: int) -> np.ndarray:

    if up == down:
        return x.astype(np.float32)
    return resample_poly(x, up, down, axis=0).astype(np.float32)


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    if len(x) >= length:
        return x[:length]
    return np.vstack([x, np.zeros((length - len(x), x.shape[1]), x.dtype)])


class FloatWavWriter:
    """Streams float32 frames into a WAV (IEEE float) whose length is known up front."""

    def __init__(self, path: Path, frames: int, rate: int = MIX_RATE, channels: int = 2):

        self.handle = open(path, "wb")
        self.expected, self.written, self.channels = frames, 0, channels
        data_bytes = frames * channels * 4
        self.handle.write(b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE")
        self.handle.write(b"fmt " + struct.pack("<IHHIIHH", 16, 3, channels, rate, rate * channels * 4, channels * 4, 32))
        self.handle.write(b"data" + struct.pack("<I", data_bytes))

    def write(self, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(frames, dtype="<f4")
        if frames.ndim != 2 or frames.shape[1] != self.channels:
            raise ValueError(f"expected (n, {self.channels}) frames, got {frames.shape}")
        self.handle.write(frames.tobytes())
        self.written += len(frames)

    def __enter__(self) -> FloatWavWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()
        if exc[0] is None and self.written != self.expected:
            raise StageError(f"separation wrote {self.written} frames, expected {self.expected}")
