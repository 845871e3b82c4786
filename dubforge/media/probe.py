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
from dubforge.core.files import kept_by_stat
from dubforge.core.languages import LanguageError, base_language, normalise_language

PORTRAIT_FPS = Fraction(25)
MIN_SIDE, MAX_PIXELS, MAX_FPS = 16, 8192 * 4320, 240  # pictures a dub can be made of: 16x16 up to 8K, 240 fps
PROBE_VERSION = 1  # of what `probe` reads: a change to it or to MediaInfo must not reuse kept readings


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


def _is_picture(stream) -> bool:
    """A real video stream, not cover art (an attached picture in an .m4a/.mp3 is one image, not a video)."""
    return not stream.disposition & av.stream.Disposition.attached_pic


def _tag(stream) -> str:
    return (stream.metadata.get("language") or "und").strip() or "und"


def choose_audio_stream(tags: list[str], language: str | None, audio_stream: int | None) -> int:
    """Index among the audio streams: `audio_stream` if given, else the first whose language tag is `language`'s,
    else the first."""
    if audio_stream is not None:
        return audio_stream
    if language:
        wanted = base_language(language)
        for index, tag in enumerate(tags):
            try:
                if tag != "und" and base_language(normalise_language(tag)) == wanted:
                    return index
            except LanguageError:
                continue
    return 0


def probe(path: Path, key: str = "source.video", language: str | None = None,
          audio_stream: int | None = None) -> MediaInfo:
    """Read stream headers (no decoding). Raise InputError naming `key` for unusable input.

    The audio stream used is `audio_stream` (index among the audio streams; manifest key source.audio_stream) if
    given, else the first one tagged with `language` (source.language), else the first.

    What was read is kept by the file's stat across processes (`kept_by_stat`): validate, ingest, every language's
    delivery and the master probe the same source, and FFmpeg reads an MP4's whole sample index to open it (an
    hour's: about 25 MB and 0.3 s)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(Problem(str(path), key, "file not found"))
    read = kept_by_stat(path, f"probe-{PROBE_VERSION}-av{av.__version__}:{language}:{audio_stream}",
                        lambda p: _read_headers(p, key, language, audio_stream).model_dump_json())
    return MediaInfo.model_validate_json(read).model_copy(update={"path": path})


def _read_headers(path: Path, key: str, language: str | None, audio_stream: int | None) -> MediaInfo:
    with open_media(path, key) as container:
        pictures = [s for s in container.streams.video if _is_picture(s)]
        if not pictures and not container.streams.audio:
            raise InputError(Problem(str(path), key, "not a media file (could not be read as audio/video)"))
        if not pictures:
            art = " (its only picture is attached cover art, not a video)" if container.streams.video else ""
            raise InputError(Problem(str(path), key, f"no video stream{art}: expected a video file, got audio only; "
                                     "dubforge dubs videos (or a photo plus speech: source.image + source.audio)"))
        video = pictures[0]
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
        width, height = int(video.codec_context.width), int(video.codec_context.height)
        if min(width, height) < MIN_SIDE or width * height > MAX_PIXELS:
            raise InputError(Problem(str(path), key, f"picture is {width}x{height}: expected at least {MIN_SIDE}x{MIN_SIDE} "
                                     f"and at most 8K ({MAX_PIXELS // 4320}x4320 pixels)"))
        if rate > MAX_FPS:
            raise InputError(Problem(str(path), key, f"frame rate {float(rate):g} fps: expected at most {MAX_FPS} fps"))

        streams = list(container.streams.audio)
        tags = [_tag(s) for s in streams]
        if audio_stream is not None and not 0 <= audio_stream < len(streams):
            have = f"audio streams 0..{len(streams) - 1}" if streams else "no audio stream"
            raise InputError(Problem(str(path), "source.audio_stream", f"no audio stream {audio_stream}: the file has {have}"))
        index = choose_audio_stream(tags, language, audio_stream)
        audio = streams[index] if streams else None
        return MediaInfo(
            path=path,
            duration=float(duration),
            has_video=True,
            width=width,
            height=height,
            fps=float(rate),
            fps_fraction=f"{rate.numerator}/{rate.denominator}",
            frame_count=int(frames),
            video_codec=video.codec_context.name,
            start_time=start,
            file_start_time=min(start, (container.start_time or 0) / 1e6),
            has_audio=audio is not None,
            audio_channels=int(audio.codec_context.channels) if audio else 0,
            audio_rate=int(audio.codec_context.sample_rate) if audio else 0,
            audio_codec=audio.codec_context.name if audio else "",
            audio_language=tags[index] if audio else "und",
            audio_start_time=_first(_seconds(audio.start_time, audio.time_base), start) if audio else 0.0,
            audio_index=index if audio else 0,
            audio_languages=tuple(tags),
        )


def check_complete(info: MediaInfo, key: str = "source.video") -> None:
    """Read every packet of the picture and the chosen audio stream (no decoding) and decode the first of each:
    a truncated file (its index promises frames its data no longer holds) or a stream that does not decode is an
    InputError naming `key`, before any work starts."""
    path = info.path
    with open_media(path, key) as container:
        video = next(s for s in container.streams.video if _is_picture(s))
        streams = [video] + ([container.streams.audio[info.audio_index]] if info.has_audio else [])
        counts = {s.index: 0 for s in streams}
        first: dict[int, list[av.Packet]] = {s.index: [] for s in streams}
        video_end = 0.0  # where the last video packet present ends, on the container clock
        try:
            for packet in container.demux(streams):
                if packet.size:
                    counts[packet.stream.index] += 1
                    if packet.stream.index == video.index and packet.pts is not None and packet.time_base:
                        video_end = max(video_end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                    if len(first[packet.stream.index]) < 8:
                        first[packet.stream.index].append(packet)
            for stream in streams:
                if not first[stream.index]:
                    raise InputError(Problem(str(path), key, f"the {stream.type} stream holds no data"))
                # a decoder may need a few packets before its first frame (AAC priming, B-frames), then a flush
                decoded = [f for p in first[stream.index] for f in p.decode()] + list(stream.codec_context.decode(None))
                if not decoded:
                    raise InputError(Problem(str(path), key, f"the {stream.type} stream does not decode"))
        except av.FFmpegError as exc:
            raise InputError(Problem(str(path), key, f"the file is damaged: {exc}")) from None
        present, declared = counts[video.index], int(video.frames or 0)
        matroska = "matroska" in container.format.name  # also WebM
    # only an index that counts its frames (MP4/MOV) can prove a file short; an estimate from durations cannot
    if declared and declared - present > max(2, declared // 100):
        raise InputError(Problem(str(path), key, f"the file is truncated or damaged: {present} of its "
                                 f"{declared} video frames are present"))
    # Matroska/WebM count no frames, but their header declares the duration the muxer wrote (not an estimate)
    expected_end = info.start_time + info.duration
    if matroska and not declared and expected_end - video_end > max(2 / info.fps, info.duration / 100):
        raise InputError(Problem(str(path), key, f"the file is truncated or damaged: its video ends at "
                                 f"{video_end:.2f} s of the {info.duration:.2f} s its header declares"))


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
