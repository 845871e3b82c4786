"""Ingest: probe the source video and extract its audio on the video's timeline.

t = 0 in every extracted WAV is the first video frame, and each WAV lasts exactly the video's duration,
so all later times (ASR, cues, the dub) line up with the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dubforge.core.contracts import SourceMedia
from dubforge.core.errors import InputError, Problem
from dubforge.core.languages import LanguageError, normalise_language
from dubforge.media.audio import MIX_RATE, SPEECH_RATE, resample, write_wav
from dubforge.media.files import fingerprint

_EXTRACT_VERSION = "ingest-1"


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    duration: float  # of the video stream, seconds
    has_video: bool
    width: int
    height: int
    fps: float
    fps_fraction: str  # exact average rate, "num/den"
    frame_count: int
    video_codec: str
    start_time: float  # of the video stream, seconds on the container clock
    has_audio: bool
    audio_channels: int
    audio_rate: int
    audio_codec: str
    audio_language: str  # ISO 639 tag of the first audio stream as stored, "und" if none
    audio_start_time: float  # of the first audio stream, seconds on the container clock


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _tag_seconds(value: str | None) -> float | None:
    """'00:01:02.500000000' -> 62.5; None if absent or malformed."""
    try:
        h, m, sec = (value or "").split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _open(path: Path, key: str):

    if not path.is_file():
        raise InputError(Problem(str(path), key, "file not found"))
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(Problem(str(path), key, "not a media file (could not be read as audio/video)")) from exc


def probe(path: Path, key: str = "source.video") -> MediaInfo:
    """Read stream headers (no decoding). Raise InputError naming `key` for unusable input."""
    path = Path(path)
    with _open(path, key) as container:
        if not container.streams.video and not container.streams.audio:
            raise InputError(Problem(str(path), key, "not a media file (could not be read as audio/video)"))
        if not container.streams.video:
            raise InputError(Problem(str(path), key, "no video stream (expected a video file, got audio only)"))
        video = container.streams.video[0]
        rate = video.average_rate or video.guessed_rate or video.base_rate
        if not rate:
            raise InputError(Problem(str(path), key, "video stream has no frame rate"))
        rate = Fraction(rate)
        start = _first(_seconds(video.start_time, video.time_base), 0.0)
        duration = _seconds(video.duration, video.time_base)
        if not duration:  # Matroska: the muxer's DURATION tag holds the stream's end time
            end = _tag_seconds(video.metadata.get("DURATION") or video.metadata.get("duration"))
            duration = end - start if end else None
        if not duration and container.duration:  # the container's may include audio codec delay
            container_start = (container.start_time or 0) / 1e6
            duration = container.duration / 1e6 - (start - container_start)
        frames = int(video.frames or 0) or (round((duration or 0.0) * rate) if duration else 0)
        if not duration or duration <= 0 or frames <= 0:
            raise InputError(Problem(str(path), key, "video has zero duration (no frames)"))

        audio = container.streams.audio[0] if container.streams.audio else None
        return MediaInfo(
            path=path,
            duration=float(duration),
            has_video=True,
            width=int(video.codec_context.width),
            height=int(video.codec_context.height),
            fps=float(rate),
            fps_fraction=f"{rate.numerator}/{rate.denominator}",
            frame_count=int(frames),
            video_codec=video.codec_context.name,
            start_time=start,
            has_audio=audio is not None,
            audio_channels=int(audio.codec_context.channels) if audio else 0,
            audio_rate=int(audio.codec_context.sample_rate) if audio else 0,
            audio_codec=audio.codec_context.name if audio else "",
            audio_language=(audio.metadata.get("language") or "und") if audio else "und",
            audio_start_time=_first(_seconds(audio.start_time, audio.time_base), start) if audio else 0.0,
        )


def decode_source_audio(path: Path, video_start: float, duration: float, key: str = "source.video") -> tuple[np.ndarray, int]:
    """Decode the first audio stream at its own rate as float32 (samples, channels<=2), placed so that
    sample 0 is at `video_start` on the container clock, padded/trimmed to `duration` seconds."""

    with _open(Path(path), key) as container:
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate)
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        total = round(duration * rate)
        channels = 1 if layout == "mono" else 2
        out = np.zeros((total, channels), np.float32)
        cursor: int | None = None  # where the next frame goes if its timestamp agrees
        tolerance = max(1, rate // 1000)
        try:
            for frame in container.decode(stream):
                start = cursor
                if frame.pts is not None and frame.time_base is not None:
                    at = round((float(frame.pts * frame.time_base) - video_start) * rate)
                    if start is None or abs(at - start) > tolerance:
                        start = at  # first frame, or a real gap/jump in the stream's timestamps
                start = start or 0
                for converted in resampler.resample(frame):
                    samples = converted.to_ndarray().T
                    _place(out, samples, start)
                    start += samples.shape[0]
                cursor = start
        except av.FFmpegError as exc:
            raise InputError(Problem(str(path), key, f"audio could not be decoded: {exc}")) from exc
    return out, rate


def _place(out: np.ndarray, samples: np.ndarray, start: int) -> None:
    lo, hi = max(start, 0), min(start + samples.shape[0], out.shape[0])
    if hi > lo:
        out[lo:hi] = samples[lo - start : hi - start]


def _fit(data: np.ndarray, length: int) -> np.ndarray:
    if data.shape[0] >= length:
        return data[:length]
    return np.concatenate([data, np.zeros((length - data.shape[0], data.shape[1]), data.dtype)])


def ingest(video: Path, work_dir: Path, key: str = "source.video") -> SourceMedia:
    """Probe `video` and write its audio as a 16 kHz mono WAV (speech) and a 48 kHz stereo WAV (mix).

    Both start at the first video frame and last exactly the video duration. The WAVs are named by the
    video's content hash and reused. Without an audio stream both are None.
    """
    video = Path(video).absolute()
    info = probe(video, key)
    speech_wav = mix_wav = None
    if info.has_audio:
        work_dir = Path(work_dir)
        tag = fingerprint(video, _EXTRACT_VERSION)[:16]
        speech_wav = work_dir / f"source-{tag}-speech16k.wav"
        mix_wav = work_dir / f"source-{tag}-mix48k.wav"
        if not (speech_wav.is_file() and mix_wav.is_file()):
            data, rate = decode_source_audio(video, info.start_time, info.duration, key)
            stereo = data if data.shape[1] == 2 else np.repeat(data, 2, axis=1)
            mono = data.mean(axis=1, keepdims=True)
            write_wav(mix_wav, _fit(resample(stereo, rate, MIX_RATE), round(info.duration * MIX_RATE)), MIX_RATE)
            write_wav(speech_wav, _fit(resample(mono, rate, SPEECH_RATE), round(info.duration * SPEECH_RATE)), SPEECH_RATE)
    return SourceMedia(
        video=video,
        duration=info.duration,
        width=info.width,
        height=info.height,
        fps=info.fps,
        frame_count=info.frame_count,
        video_codec=info.video_codec,
        speech_wav=speech_wav,
        mix_wav=mix_wav,
        audio_language=_bcp47(info.audio_language),
    )


def _bcp47(tag: str) -> str:
    """Container tags are ISO 639-2 ('eng'); the rest of dubforge speaks BCP-47 ('en')."""

    if tag in ("", "und"):
        return "und"
    try:
        return normalise_language(tag)
    except LanguageError:
        return tag
