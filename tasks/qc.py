"""Delivery QC: measure what ships (the muxed file, decoded back), not the WAVs that went in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dubforge.errors import StageError

_OVERSAMPLE = 4  # true peak per ITU-R BS.1770-4 annex 2


@dataclass(frozen=True)
class TrackInfo:
    index: int  # ordinal among streams of its kind (ffmpeg's a:N / s:N)
    codec: str
    language: str  # as tagged in the container ('spa', 'ger'), "und" if untagged
    title: str
    default: bool
    channels: int = 0
    sample_rate: int = 0


@dataclass(frozen=True)
class Delivery:
    path: Path
    duration: float  # container
    video_duration: float
    frame_count: int
    fps: float
    audio: tuple[TrackInfo, ...]
    subtitles: tuple[TrackInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    measured_audio: int = 0  # which audio track (ordinal) the loudness figures are for
    integrated_lufs: float = float("-inf")  # -inf for digital silence
    true_peak_dbtp: float = float("-inf")

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(track.language for track in self.audio)


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _track(i: int, stream) -> TrackInfo:
    ctx = stream.codec_context
    is_audio = stream.type == "audio"
    return TrackInfo(
        index=i,
        codec=ctx.name if ctx is not None else "",
        language=stream.metadata.get("language") or "und",
        title=stream.metadata.get("title") or "",
        default=bool(stream.disposition & 1),  # AV_DISPOSITION_DEFAULT
        channels=int(ctx.channels) if is_audio else 0,
        sample_rate=int(ctx.sample_rate) if is_audio else 0,
    )


def decode_audio(path: Path, audio_index: int = 0) -> tuple[np.ndarray, int]:
    """Decode audio stream a:`audio_index` of a file as float32 (samples, channels), stereo at most."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[audio_index]
        rate = int(stream.codec_context.sample_rate)
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = [
            converted.to_ndarray()
            for frame in container.decode(stream)
            for converted in resampler.resample(frame)
        ]
        chunks += [converted.to_ndarray() for converted in resampler.resample(None)]
    channels = 1 if layout == "mono" else 2
    data = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, channels), np.float32)
    return np.ascontiguousarray(data, dtype=np.float32), rate


def loudness(data: np.ndarray, rate: int) -> tuple[float, float]:
    """(integrated loudness in LUFS per BS.1770 via pyloudnorm, true peak in dBTP with 4x oversampling)."""
    import pyloudnorm
    from scipy.signal import resample_poly

    if data.shape[0] < int(0.4 * rate):  # shorter than one gating block
        lufs = float("-inf")
    else:
        lufs = float(pyloudnorm.Meter(rate).integrated_loudness(data))
    peak = float(np.max(np.abs(resample_poly(data, _OVERSAMPLE, 1, axis=0)))) if data.size else 0.0
    return lufs, (20 * np.log10(peak) if peak > 0 else float("-inf"))


def measure_delivery(path: Path, stream_index: int | None = None) -> Delivery:
    """Probe a deliverable and measure the loudness of one audio track as decoded from the file.

    `stream_index` is the ordinal among audio streams (0 = first audio track, ffmpeg's a:0); None picks the
    track flagged default, else the first.
    """
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise StageError(f"qc: cannot open deliverable {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise StageError(f"qc: deliverable {path} has no video stream")
        video = container.streams.video[0]
        rate = video.average_rate or video.guessed_rate
        duration = (container.duration or 0) / 1e6
        video_duration = _seconds(video.duration, video.time_base)
        frames = int(video.frames or 0)
        if not frames or video_duration is None:  # Matroska stores neither: count the packets
            pts = [(p.pts, p.duration) for p in container.demux(video) if p.pts is not None and p.size]
            frames = len(pts)
            if pts:
                first = min(t for t, _ in pts)
                last, last_duration = max(pts)
                step = last_duration or (1 / rate / video.time_base if rate else 0)
                video_duration = float((last + step - first) * video.time_base)
        audio = tuple(_track(i, s) for i, s in enumerate(container.streams.audio))
        subtitles = tuple(_track(i, s) for i, s in enumerate(container.streams.subtitles))
        metadata = dict(container.metadata)

    if stream_index is None:
        stream_index = next((t.index for t in audio if t.default), 0)
    lufs = peak = float("-inf")
    if audio:
        if not 0 <= stream_index < len(audio):
            raise StageError(f"qc: {path} has {len(audio)} audio streams; no audio stream {stream_index}")
        data, audio_rate = decode_audio(path, stream_index)
        lufs, peak = loudness(data, audio_rate)
    return Delivery(
        path=path,
        duration=duration,
        video_duration=float(video_duration or 0.0),
        frame_count=frames,
        fps=float(rate) if rate else 0.0,
        audio=audio,
        subtitles=subtitles,
        metadata=metadata,
        measured_audio=stream_index if audio else -1,
        integrated_lufs=lufs,
        true_peak_dbtp=peak,
    )


def subtitles_inside(srt_path: Path, duration: float, tolerance: float = 0.001) -> bool:
    """True when every cue of the SRT lies within [0, duration] and none ends before it starts."""
    import srt

    cues = list(srt.parse(Path(srt_path).read_text(encoding="utf-8-sig")))
    return all(
        0 <= c.start.total_seconds() <= c.end.total_seconds() <= duration + tolerance for c in cues
    )
