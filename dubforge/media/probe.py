"""Probe sources without decoding them: stream headers of a video, or what a still photo plus its speech will become.

Validation (`dubforge.core.plan`) and ingest both read sources through here, so a bad file is the same clear
InputError, naming the manifest key, wherever it is found.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from dubforge.core.contracts import MediaInfo
from dubforge.core.errors import InputError, Problem

PORTRAIT_FPS = Fraction(25)


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


def open_media(path: Path, key: str):

    if not path.is_file():
        raise InputError(Problem(str(path), key, "file not found"))
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(Problem(str(path), key, "not a media file (could not be read as audio/video)")) from exc


def probe(path: Path, key: str = "source.video") -> MediaInfo:
    """Read stream headers (no decoding). Raise InputError naming `key` for unusable input."""
    path = Path(path)
    with open_media(path, key) as container:
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


def read_image(path: Path, key: str) -> np.ndarray:

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(Problem(str(path), key, "not an image (expected a JPEG/PNG photo)"))
    height, width = image.shape[:2]
    return cv2.cvtColor(image[: height - height % 2, : width - width % 2], cv2.COLOR_BGR2RGB)  # H.264 wants even sizes


def _audio_duration(path: Path, key: str) -> float:

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(Problem(str(path), key, "no audio stream (expected the speech of the portrait)"))
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return float(container.duration or 0) / 1e6
    except (av.FFmpegError, UnicodeDecodeError):
        raise InputError(Problem(str(path), key, "not an audio file")) from None


def probe_portrait(image: Path, audio: Path) -> MediaInfo:
    """What the still video made from `image` and `audio` will be (no file written)."""
    rgb = read_image(image, "source.image")
    duration = _audio_duration(audio, "source.audio")
    if duration <= 0:
        raise InputError(Problem(str(audio), "source.audio", "the audio has zero duration"))
    frames = max(1, round(duration * PORTRAIT_FPS))
    return MediaInfo(
        path=Path(image), duration=float(frames / PORTRAIT_FPS), has_video=True, width=rgb.shape[1], height=rgb.shape[0],
        fps=float(PORTRAIT_FPS), fps_fraction=f"{PORTRAIT_FPS.numerator}/{PORTRAIT_FPS.denominator}", frame_count=frames,
        video_codec="h264 (still photo)", start_time=0.0, has_audio=True, audio_channels=2, audio_rate=48_000,
        audio_codec="aac", audio_language="und", audio_start_time=0.0,
    )
