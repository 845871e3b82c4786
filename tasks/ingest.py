"""Ingest: probe the source video and extract its audio on the video's timeline.

t = 0 in every extracted WAV is the first video frame, and each WAV lasts exactly the video's duration,
so all later times (ASR, cues, the dub) line up with the picture.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from dubforge.core.contracts import SourceMedia
from dubforge.core.errors import InputError, Problem
from dubforge.core.files import fingerprint
from dubforge.core.languages import LanguageError, normalise_language
from dubforge.media.audio import MIX_RATE, SPEECH_RATE, resample, write_wav
from dubforge.media.probe import open_media, probe

_EXTRACT_VERSION = "ingest-1"


def decode_source_audio(path: Path, video_start: float, duration: float, key: str = "source.video",
                        index: int = 0) -> tuple[np.ndarray, int]:
    """Decode audio stream `index` (among the audio streams) at its own rate as float32 (samples, channels<=2), placed so that
    sample 0 is at `video_start` on the container clock, padded/trimmed to `duration` seconds."""

    with open_media(Path(path), key) as container:
        stream = container.streams.audio[index]
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
            data, rate = decode_source_audio(video, info.start_time, info.duration, key, info.audio_index)
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
        audio_stream=info.audio_index,
    )


def _bcp47(tag: str) -> str:
    """Container tags are ISO 639-2 ('eng'); the rest of dubforge speaks BCP-47 ('en')."""

    if tag in ("", "und"):
        return "und"
    try:
        return normalise_language(tag)
    except LanguageError:
        return tag
