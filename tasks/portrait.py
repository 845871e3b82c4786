"""A still photo as source: probe it and turn it (with its speech) into a still video.

The rest of the pipeline then treats the portrait like any video: the audio stages dub its speech and
the lip-sync renderer animates the face (portrait mode: warped mouth, blinks, small head motion).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from dubforge.core.errors import InputError, Problem
from dubforge.media.audio import MIX_RATE, decode_audio, resample, to_channels
from dubforge.media.files import atomic_path, fingerprint
from dubforge.tasks.ingest import MediaInfo

PORTRAIT_FPS = Fraction(25)


def _read_image(path: Path, key: str) -> np.ndarray:

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
    rgb = _read_image(image, "source.image")
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


def still_video(image: Path, audio: Path, work_dir: Path) -> Path:
    """H.264 + AAC MP4 showing `image` for the length of `audio` (reused when already made)."""

    out = Path(work_dir) / f"portrait-{fingerprint(image, audio)}.mp4"
    if out.exists():
        return out
    info = probe_portrait(image, audio)
    rgb = _read_image(image, "source.image")
    samples, rate = decode_audio(audio, key="source.audio")
    samples = to_channels(resample(samples, rate, MIX_RATE), 2)[: round(info.duration * MIX_RATE)]
    with atomic_path(out) as tmp, av.open(str(tmp), "w") as container:
        video = container.add_stream("libx264", rate=PORTRAIT_FPS)
        video.width, video.height, video.pix_fmt = info.width, info.height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "16"}
        sound = container.add_stream("aac", rate=MIX_RATE)
        sound.layout = "stereo"
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for index in range(info.frame_count):
            frame.pts = index
            frame.time_base = 1 / PORTRAIT_FPS
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        planar = np.ascontiguousarray(samples.T)
        for start in range(0, planar.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start : start + 1024]), format="fltp",
                                               layout="stereo")
            chunk.sample_rate, chunk.pts, chunk.time_base = MIX_RATE, start, Fraction(1, MIX_RATE)
            for packet in sound.encode(chunk):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    return out
