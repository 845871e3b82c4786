"""Neural lip-sync: a Wav2Lip-compatible generator behind the default renderer's interface.

The network follows Prajwal et al., "A Lip Sync Expert Is All You Need" (ACM MM 2020): a face encoder
over a 96x96 crop (lower half masked) stacked with a reference crop (6 channels), an audio encoder over
an 80x16 mel window (0.2 s), and a decoder with skip connections producing the crop. Module names match
the published checkpoint (`{'state_dict': {...}}`, optionally with DataParallel's `module.` prefix).

The renderer reuses the default renderer's face track, pose alignment, mask and blend: each frame's
crop is cut along the tracked pose (a stable square in canonical face coordinates), the network paints
the lower half, and the result is warped back and blended inside the same feathered lower-face mask.
Weights: non-commercial (see models.yaml licence note). GPU when present, CPU otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dubforge.core.contracts import Phoneme
from dubforge.core.errors import StageError
from dubforge.core.files import atomic_path, fingerprint, sha256_file
from dubforge.core.model_store import resolve
from dubforge.lipsync import compose as c
from dubforge.lipsync import geometry as g
from dubforge.lipsync.perframe import load_compact
from dubforge.lipsync.records import FaceTrack, LipsyncResult, finish_render
from dubforge.lipsync.rows import exact_median
from dubforge.lipsync.track import Landmarks
from dubforge.lipsync.video import H264Writer, frames, probe, yuv_planes
from dubforge.media.audio import WavReader, resample_blocks, to_channels
from dubforge.models.base import LipsyncRenderer, ProgressCallback

VERSION = 1
SIZE = 96
MEL_STEP = 16
GROUP = 64  # mel columns: the streamed spectrogram's pieces are whole groups (see mel_frames)
SAMPLE_RATE, N_FFT, HOP, N_MELS, FMIN, FMAX = 16_000, 800, 200, 80, 55, 7600


def build_network():
    import torch
    from torch import nn

    class Conv(nn.Module):
        def __init__(self, cin, cout, k, s, p, residual=False):
            super().__init__()
            self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()
            self.residual = residual

        def forward(self, x):
            out = self.conv_block(x)
            return self.act(out + x if self.residual else out)

    class Up(nn.Module):
        def __init__(self, cin, cout, k, s, p, output_padding=0):
            super().__init__()
            self.conv_block = nn.Sequential(nn.ConvTranspose2d(cin, cout, k, s, p, output_padding), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv_block(x))

    def res(c):
        return Conv(c, c, 3, 1, 1, residual=True)

    S = nn.Sequential

    class Wav2Lip(nn.Module):
        def __init__(self):
            super().__init__()
            self.face_encoder_blocks = nn.ModuleList([
                S(Conv(6, 16, 7, 1, 3)),                                   # 96
                S(Conv(16, 32, 3, 2, 1), res(32), res(32)),                # 48
                S(Conv(32, 64, 3, 2, 1), res(64), res(64), res(64)),       # 24
                S(Conv(64, 128, 3, 2, 1), res(128), res(128)),             # 12
                S(Conv(128, 256, 3, 2, 1), res(256), res(256)),            # 6
                S(Conv(256, 512, 3, 2, 1), res(512)),                      # 3
                S(Conv(512, 512, 3, 1, 0), Conv(512, 512, 1, 1, 0)),       # 1
            ])
            self.audio_encoder = S(
                Conv(1, 32, 3, 1, 1), res(32), res(32),
                Conv(32, 64, 3, (3, 1), 1), res(64), res(64),
                Conv(64, 128, 3, 3, 1), res(128), res(128),
                Conv(128, 256, 3, (3, 2), 1), res(256),
                Conv(256, 512, 3, 1, 0), Conv(512, 512, 1, 1, 0),
            )
            self.face_decoder_blocks = nn.ModuleList([
                S(Conv(512, 512, 1, 1, 0)),
                S(Up(1024, 512, 3, 1, 0), res(512)),
                S(Up(1024, 512, 3, 2, 1, 1), res(512), res(512)),
                S(Up(768, 384, 3, 2, 1, 1), res(384), res(384)),
                S(Up(512, 256, 3, 2, 1, 1), res(256), res(256)),
                S(Up(320, 128, 3, 2, 1, 1), res(128), res(128)),
                S(Up(160, 64, 3, 2, 1, 1), res(64), res(64)),
            ])
            self.output_block = S(Conv(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

        def forward(self, mel, faces):
            """mel (B, 1, 80, 16), faces (B, 6, 96, 96) in [0, 1] -> (B, 3, 96, 96)."""
            feats = []
            x = faces
            for block in self.face_encoder_blocks:
                x = block(x)
                feats.append(x)
            x = self.audio_encoder(mel)
            for block in self.face_decoder_blocks:
                x = torch.cat((block(x), feats.pop()), dim=1)
            return self.output_block(x)

    return Wav2Lip()


def load_network(path: Path, device: str = "cpu"):
    import torch

    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StageError(f"{path}: cannot read as a Wav2Lip checkpoint: {exc}") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise StageError(f"{path}: expected a dict with 'state_dict' (a Wav2Lip checkpoint)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = build_network()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise StageError(f"{path}: not a Wav2Lip generator checkpoint ({len(missing)} missing keys e.g. "
                         f"{missing[:2]}, {len(unexpected)} unexpected e.g. {unexpected[:2]})")
    return net.eval().to(device)


def check_model(path: Path) -> str:
    net = load_network(Path(path))
    return f"Wav2Lip generator, {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters"


def mel_frames(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Wav2Lip's audio features of the 16 kHz mono signal given in 1-D blocks, as consecutive (80, k) pieces of
    its (80, 1 + samples // 200) spectrogram at 80 fps: pre-emphasis 0.97, 800-point STFT every 200 samples
    (librosa's centred frames, zero padded), 80 Slaney mel bands 55-7600 Hz, dB - 20, scaled symmetrically to
    [-4, 4]. Each STFT frame is cut from the same pre-emphasised samples as the whole signal's, and the mel
    projection (a BLAS product, whose last bits for a column depend on the shape of the product it is part of:
    narrow edges take other kernels) runs on whole GROUPs of columns, the last piece GROUP or more wide: with
    NumPy's OpenBLAS the values are the whole-array computation's to the bit (tests/neural/test_neural_wav2lip.py
    allows 2 float32 ulps elsewhere). Memory: one block."""

    import librosa  # heavy, and only in the neural venv

    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)

    def features(samples: np.ndarray) -> np.ndarray:
        spec = np.abs(librosa.stft(y=samples, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, center=False))
        db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
        return np.clip(8 * ((db + 100) / 100) - 4, -4, 4).astype(np.float32)

    half = N_FFT // 2
    held = np.zeros(half, np.float32)  # pre-emphasised samples from the next column's first on (centre padding first)
    samples, column, previous = 0, 0, np.float32(0)
    for block in blocks:
        block = np.asarray(block, np.float32)
        if not len(block):
            continue
        emphasised = block - 0.97 * np.concatenate([[previous], block[:-1]])
        previous, samples = block[-1], samples + len(block)
        held = np.concatenate([held, emphasised])
        complete = (len(held) - N_FFT) // HOP + 1  # columns whose 800 samples have all arrived
        ready = (complete - GROUP) // GROUP * GROUP  # whole groups, GROUP or more columns kept for the end
        if ready > 0:
            yield features(held[: (ready - 1) * HOP + N_FFT])
            held, column = held[ready * HOP:], column + ready
    left = 1 + samples // HOP - column  # the whole signal has 1 + samples // HOP columns
    if left > 0:
        tail = np.concatenate([held, np.zeros(half, np.float32)])  # the centre padding at the end
        yield features(tail[: (left - 1) * HOP + N_FFT])


class MelWindows:
    """Wav2Lip's 16-frame mel windows of a WAV (any rate and channels: mixed to mono, resampled to 16 kHz),
    computed a block at a time as the render asks for them in order; only the columns from the last window on
    are held. A window before those restarts the stream (the render never asks for one)."""

    def __init__(self, wav: Path):
        self.reader = WavReader(wav)
        samples = -(-self.reader.frames * SAMPLE_RATE // self.reader.rate)  # resample's output length
        self.columns = 1 + samples // HOP
        self._restart()

    def _restart(self) -> None:
        mono = (to_channels(block, 1) for block in self.reader.blocks())
        self._pieces = mel_frames(b[:, 0] for b in resample_blocks(mono, self.reader.rate, SAMPLE_RATE))
        self._first, self._held = 0, np.zeros((N_MELS, 0), np.float32)

    def window(self, time: float) -> np.ndarray:
        """The 16 mel frames starting at `time` (Wav2Lip's frame i at fps f starts at int(80 * i / f))."""
        start = min(max(int(80.0 * time), 0), max(self.columns - MEL_STEP, 0))
        if start < self._first:
            self._restart()
        end = min(start + MEL_STEP, self.columns)
        while self._first + self._held.shape[1] < end:
            self._held = np.concatenate([self._held, next(self._pieces)], axis=1)
        self._held, self._first = self._held[:, start - self._first:], start
        window = self._held[:, :MEL_STEP]
        if window.shape[1] < MEL_STEP:
            window = np.pad(window, ((0, 0), (0, MEL_STEP - window.shape[1])), mode="edge")
        return window


def crop_square(marks: Landmarks, valid: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and side (canonical units) of a face square like Wav2Lip's training crops: brow to chin,
    the chin near the bottom edge; the median over the clip keeps the crop still. The face oval's extent is
    read a window of frames at a time, and its medians are np.median's to the bit (`rows.exact_median`)."""

    oval = g.sub(g.FACE_OVAL)

    def extents():  # per usable frame: the oval's (min x, min y, max x, max y)
        for a, _, canon in marks.windows():
            points = canon[valid[a: a + len(canon)]][:, oval]
            yield np.concatenate([points.min(1), points.max(1)], axis=1)

    lo, hi = np.split(exact_median(extents, int(valid.sum())), 2)
    side = float(max(hi - lo) * 1.05)
    centre = np.array([(lo[0] + hi[0]) / 2, hi[1] + 0.03 * side - side / 2])
    return centre, side


class Wav2LipRenderer(LipsyncRenderer):
    name = "wav2lip"
    needs_weights = True

    def __init__(self, model: str = "wav2lip", registry: Path | None = None, feather: float = 0.07,
                 batch: int = 16, device: str = "auto"):

        self.checkpoint = resolve(model, "wav2lip", registry)
        self.feather, self.batch, self.device_option = float(feather), int(batch), device

    def fingerprint(self) -> str:

        return fingerprint(self.name, VERSION, sha256_file(self.checkpoint), self.feather)

    def render(self, video: Path, track: FaceTrack, dub_phonemes: Sequence[Phoneme],
               source_phonemes: Sequence[Phoneme], out_video: Path, *, audio: Path | None = None, preset: str = "veryfast",
               crf: int = 18, progress: ProgressCallback | None = None, portrait: bool = False) -> LipsyncResult:
        import torch

        if portrait:  # `dubforge validate` refuses this pairing; a direct call gets the same answer
            raise StageError("wav2lip cannot animate a still photo (source.image): use lipsync.backend mouth-bank")
        if audio is None:
            raise StageError("wav2lip renders from the dub audio: pass audio=<the language's dialogue WAV>")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device_option == "auto" else self.device_option
        net = load_network(self.checkpoint, device)
        # The dub audio, its mel spectrogram and the landmarks are read a block or window at a time: memory
        # stays flat in the source's length (docs/benchmarks.md, "Lip-sync memory").
        mel = MelWindows(Path(audio))
        info = probe(video)
        arrays = load_compact(track)  # the pose, like the landmarks, is read a window at a time
        marks = Landmarks(track, arrays["pose"])
        valid, n = arrays["valid"], track.frame_count
        warnings: list[str] = []
        square = None
        if valid.any():
            square = crop_square(marks, valid)
        else:
            warnings.append(f"{video}: no usable face in any frame ({track.reason}); video passed through unchanged")
        rendered = 0
        with atomic_path(Path(out_video)) as tmp, torch.no_grad():
            with H264Writer(tmp, info, preset=preset, crf=crf) as writer:
                pending: list[tuple[int, Any]] = []
                state: dict = {}

                def flush() -> None:
                    nonlocal rendered
                    faces = [i for i, _f in pending if i < n and valid[i] and square is not None]
                    painted = self._paint(net, device, pending, faces, arrays, square, mel) if faces else {}
                    for i, frame in pending:
                        buf = self._compose(frame, painted.get(i), i, arrays, marks, state)
                        rendered += i in painted
                        writer.write(buf, frame.pts)
                        if progress:
                            progress(i + 1, n)
                    pending.clear()

                for i, frame in enumerate(frames(video)):
                    pending.append((i, frame))
                    if len(pending) >= self.batch:
                        flush()
                flush()
                count = writer.count
        return finish_render(video, out_video, n, count, rendered, warnings, count_passed=square is not None,
                             visemes="neural", source_sync=None, backend=self.name)

    @staticmethod
    def _to_crop(arrays, i: int, square) -> np.ndarray:
        """2x3 affine: frame pixels -> 96x96 crop pixels (the frame's pose, then the canonical square)."""
        centre, side = square
        s = SIZE / side
        pose = arrays["pose"][i]  # frame -> canonical similarity
        return np.hstack([s * pose[:, :2], (s * (pose[:, 2] - centre) + SIZE / 2)[:, None]])

    def _paint(self, net, device, pending, faces, arrays, square, mel: MelWindows) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        import torch

        crops, mels, affines = [], [], []
        frames_by_index = dict(pending)
        for i in faces:
            affine = self._to_crop(arrays, i, square)
            rgb = frames_by_index[i].to_ndarray(format="rgb24")
            crop = cv2.warpAffine(rgb, affine, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
            crops.append(crop)
            mels.append(mel.window(float(arrays["times"][i])))
            affines.append(affine)
        ref = np.stack(crops).astype(np.float32) / 255.0
        masked = ref.copy()
        masked[:, SIZE // 2:] = 0.0
        faces_in = torch.from_numpy(np.concatenate([masked, ref], axis=3)).permute(0, 3, 1, 2).to(device)
        mel_in = torch.from_numpy(np.stack(mels))[:, None].to(device)
        out = net(mel_in, faces_in).permute(0, 2, 3, 1).float().cpu().numpy()
        return {i: (np.clip(o * 255.0, 0, 255).astype(np.uint8), a) for i, o, a in zip(faces, out, affines)}

    def _compose(self, frame, painted, i: int, arrays, marks: Landmarks, state: dict) -> np.ndarray:

        buf, y, u, v = yuv_planes(frame)
        if painted is None:
            state.clear()
            return buf
        crop_rgb, affine = painted
        height, width = y.shape
        pose = arrays["pose"][i]
        inv = g.invert(pose)
        iod_px = 1.0 / np.hypot(pose[0, 0], pose[1, 0])
        feather = self.feather * iod_px
        polygon = g.apply(inv, c.mask_polygon(marks.canon(i)))
        box = c.region(polygon, width, height, int(feather) + 2)
        if box is None:
            return buf
        x0, y0, x1, y1 = box
        back = g.invert(affine)  # crop pixels -> frame pixels
        back[:, 2] -= (x0, y0)
        ycrcb = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)  # BT.601, full range
        yuv = np.stack([16 + ycrcb[..., 0] * (219 / 255), 128 + (ycrcb[..., 2] - 128) * (224 / 255),
                        128 + (ycrcb[..., 1] - 128) * (224 / 255)], axis=-1)  # limited range, like yuv420p
        warped = cv2.warpAffine(yuv, back, (x1 - x0, y1 - y0), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        c.blend((y, u, v), warped, c.alpha_mask(polygon, box, feather), box, state)
        return buf
