"""Ingest: probe the source video and extract its audio on the video's timeline.

t = 0 in every extracted WAV is the first video frame, and each WAV lasts exactly the video's duration,
so all later times (ASR, cues, the dub) line up with the picture.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

import av
import numpy as np

from dubforge.core.contracts import SourceMedia
from dubforge.core.errors import InputError, Problem
from dubforge.core.files import fingerprint
from dubforge.core.languages import LanguageError, normalise_language
from dubforge.media.audio import (
    BLOCK_S,
    MIX_RATE,
    SPEECH_RATE,
    fitted,
    regrouped,
    resample_blocks,
    to_channels,
    two_ways,
    wav_writer,
)
from dubforge.media.probe import open_media, probe

_EXTRACT_VERSION = "ingest-1"


def decode_source_audio(path: Path, video_start: float, duration: float, key: str = "source.video",
                        index: int = 0) -> tuple[int, int, Iterator[np.ndarray]]:
    """Decode audio stream `index` (among the audio streams) at its own rate: (rate, channels <= 2, blocks of about
    BLOCK_S as float32 (samples, channels)), placed so that sample 0 is at `video_start` on the container clock,
    padded/trimmed to `duration` seconds. The blocks are decoded as they are read (the file stays open until then)."""

    container = open_media(Path(path), key)
    try:
        stream = container.streams.audio[index]
        rate = int(stream.codec_context.sample_rate)
        channels = 1 if stream.codec_context.channels == 1 else 2
    except BaseException:
        container.close()
        raise
    return rate, channels, regrouped(_placed(container, stream, rate, channels, video_start, duration, path, key),
                                     int(BLOCK_S * rate))


def _placed(container, stream, rate: int, channels: int, video_start: float, duration: float, path: Path,
            key: str) -> Iterator[np.ndarray]:
    """The stream's samples on the video's timeline: a gap in the timestamps is silence; samples before the first
    video frame, past the end, or timestamped earlier than what was already placed are dropped."""
    resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=rate)
    total = round(duration * rate)
    done = 0  # samples placed so far
    cursor: int | None = None  # where the next frame goes if its timestamp agrees
    tolerance = max(1, rate // 1000)

    def silence(upto: int) -> Iterator[np.ndarray]:
        nonlocal done
        while done < min(upto, total):
            count = min(min(upto, total) - done, int(BLOCK_S * rate))
            yield np.zeros((count, channels), np.float32)
            done += count

    with container:
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
                    yield from silence(start)
                    lo, hi = max(start, done), min(start + samples.shape[0], total)
                    if hi > lo:
                        yield samples[lo - start : hi - start]
                        done = hi
                    start += samples.shape[0]
                cursor = start
        except av.FFmpegError as exc:
            raise InputError(Problem(str(path), key, f"audio could not be decoded: {exc}")) from exc
    yield from silence(total)


def ingest(video: Path, work_dir: Path, key: str = "source.video", language: str | None = None,
           audio_stream: int | None = None) -> SourceMedia:
    """Probe `video` and write its audio as a 16 kHz mono WAV (speech) and a 48 kHz stereo WAV (mix).

    The audio stream is `audio_stream` if given, else the first tagged `language`, else the first. Both WAVs
    start at the first video frame and last exactly the video duration. The WAVs are named by the video's
    content hash and the stream, and reused. Without an audio stream both are None.
    """
    video = Path(video).absolute()
    info = probe(video, key, language=language, audio_stream=audio_stream)
    speech_wav = mix_wav = None
    if info.has_audio:
        work_dir = Path(work_dir)
        tag = fingerprint(video, _EXTRACT_VERSION, info.audio_index)[:16]
        speech_wav = work_dir / f"source-{tag}-speech16k.wav"
        mix_wav = work_dir / f"source-{tag}-mix48k.wav"
        if not (speech_wav.is_file() and mix_wav.is_file()):
            _extract(video, info.start_time, info.duration, key, info.audio_index, mix_wav, speech_wav)
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
        audio_stream=info.audio_index,
    )


def _extract(video: Path, start: float, duration: float, key: str, index: int, mix_wav: Path, speech_wav: Path) -> None:
    """One streamed decode into both WAVs, block by block."""
    rate, _, blocks = decode_source_audio(video, start, duration, key, index)
    stereo_blocks, mono_blocks = two_ways(blocks)  # consumed in step below: about one block is held
    stereo = fitted(resample_blocks((to_channels(b, 2) for b in stereo_blocks), rate, MIX_RATE),
                    round(duration * MIX_RATE), 2)
    mono = fitted(resample_blocks((b.mean(axis=1, keepdims=True) for b in mono_blocks), rate, SPEECH_RATE),
                  round(duration * SPEECH_RATE), 1)
    with wav_writer(mix_wav, MIX_RATE, 2) as mix, wav_writer(speech_wav, SPEECH_RATE, 1) as speech:
        for a, b in zip_longest(stereo, mono):
            if a is not None:
                mix.write(a)
            if b is not None:
                speech.write(b)


def _bcp47(tag: str) -> str:
    """Container tags are ISO 639-2 ('eng'); the rest of dubforge speaks BCP-47 ('en')."""

    if tag in ("", "und"):
        return "und"
    try:
        return normalise_language(tag)
    except LanguageError:
        return tag
