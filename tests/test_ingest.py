"""Ingest: exact probing of test videos made with PyAV, clear errors, WAVs on the video's timeline."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dubforge.core.errors import InputError
from dubforge.media.audio import read_wav
from dubforge.tasks.ingest import ingest, probe


def make_video(
    path: Path,
    seconds: float = 3.0,
    fps: Fraction | int = 25,
    size: tuple[int, int] = (320, 240),
    audio: np.ndarray | None = None,
    audio_rate: int = 48_000,
    audio_delay: float = 0.0,
    language: str | None = None,
    preset: str = "ultrafast",
    codec: str = "libx264",
) -> Path:
    """Write an H.264 MP4 (or ProRes/DNxHR in a MOV: `codec`) (moving gradient) of round(seconds*fps) frames, with optional AAC audio
    (float array (samples, channels)) whose first sample sits `audio_delay` seconds after the first frame
    (negative: before it). Returns `path`."""
    import av

    fps = Fraction(fps)
    frames = round(seconds * fps)
    width, height = size
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=fps)
        v.width, v.height = width, height
        v.pix_fmt = {"libx264": "yuv420p", "prores_ks": "yuv422p10le", "dnxhd": "yuv422p"}[codec]
        v.options = {"libx264": {"preset": preset}, "prores_ks": {}, "dnxhd": {"profile": "dnxhr_lb"}}[codec]
        a = None
        if audio is not None:
            a = out.add_stream("aac", rate=audio_rate)
            a.layout = "stereo" if audio.shape[1] == 2 else "mono"
            if language:
                a.metadata["language"] = language
        video_shift = round(max(-audio_delay, 0.0) * fps)  # video starts later when audio leads
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, np.full_like(xx, (7 * i) % 256)], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            frame.pts = i + video_shift
            frame.time_base = 1 / fps
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        if a is not None:
            start = round(max(audio_delay, 0.0) * audio_rate)
            planar = np.ascontiguousarray(audio.T.astype(np.float32))
            for pos in range(0, planar.shape[1], 1024):
                chunk = np.ascontiguousarray(planar[:, pos : pos + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=a.layout.name)
                frame.sample_rate = audio_rate
                frame.pts = start + pos
                frame.time_base = Fraction(1, audio_rate)
                for packet in a.encode(frame):
                    out.mux(packet)
            for packet in a.encode():
                out.mux(packet)
    return path


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 2, level: float = 0.25) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.repeat((level * np.sin(2 * np.pi * freq * t))[:, None], channels, axis=1).astype(np.float32)


def clicks(seconds: float, rate: int, at: list[float]) -> np.ndarray:
    """Silence with short 1 kHz bursts starting at the given times (to check alignment)."""
    data = np.zeros((round(seconds * rate), 1), np.float32)
    burst = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(round(0.02 * rate)) / rate)
    for t in at:
        i = round(t * rate)
        data[i : i + len(burst), 0] = burst[: len(data) - i]
    return data


def onset(data: np.ndarray, rate: int, after: float = 0.0, threshold: float = 0.2) -> float:
    x = np.abs(data[:, 0])
    i = round(after * rate)
    return (i + int(np.argmax(x[i:] > threshold))) / rate


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001)])
def test_probe_exact(tmp_path, fps):
    path = make_video(tmp_path / "v.mp4", 3.0, fps, audio=tone(3.0, 44_100), audio_rate=44_100, language="eng")
    info = probe(path)
    frames = round(3.0 * fps)
    assert info.frame_count == frames
    assert info.fps_fraction == f"{fps.numerator}/{fps.denominator}"
    assert info.fps == pytest.approx(float(fps))
    assert info.duration == pytest.approx(frames / fps, abs=1e-6)
    assert (info.width, info.height, info.video_codec) == (320, 240, "h264")
    assert info.has_audio and info.audio_rate == 44_100 and info.audio_channels == 2
    assert info.audio_language == "eng"

    # Matroska stores no frame count or stream duration; its container duration includes the AAC codec delay
    from dubforge.media import ffmpeg

    mkv = tmp_path / "v.mkv"
    ffmpeg.run(["-i", path, "-c", "copy", mkv])
    again = probe(mkv)
    assert (again.frame_count, again.fps_fraction) == (frames, info.fps_fraction)
    assert again.duration == pytest.approx(info.duration, abs=1e-3)


def test_probe_errors(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match=r"notes\.mp4: source\.video: not a media file"):
        probe(fake)
    with pytest.raises(InputError, match="file not found"):
        probe(tmp_path / "missing.mp4")

    import av

    audio_only = tmp_path / "speech.m4a"
    with av.open(str(audio_only), "w") as out:
        s = out.add_stream("aac", rate=48_000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(0.5, 48_000, channels=1).T.copy(), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48_000, 0
        for p in [*s.encode(frame), *s.encode()]:
            out.mux(p)
    with pytest.raises(InputError, match=r"speech\.m4a: jobs\[0\]\.video: no video stream") as err:
        probe(audio_only, key="jobs[0].video")
    assert err.value.problems[0].key == "jobs[0].video"


def test_ingest_lengths_and_reuse(tmp_path):
    fps = Fraction(30000, 1001)
    path = make_video(tmp_path / "v.mp4", 3.0, fps, audio=clicks(3.2, 44_100, [0.5, 2.0]), audio_rate=44_100,
                      language="spa")
    media = ingest(path, tmp_path / "work")
    duration = 90 / fps
    assert media.frame_count == 90 and media.duration == pytest.approx(float(duration))
    assert media.audio_language == "es"
    speech, r16 = read_wav(media.speech_wav)
    mix, r48 = read_wav(media.mix_wav)
    assert (r16, speech.shape) == (16_000, (round(float(duration) * 16_000), 1))
    assert (r48, mix.shape) == (48_000, (round(float(duration) * 48_000), 2))  # trimmed: audio ran 3.2 s
    assert onset(mix, r48) == pytest.approx(0.5, abs=0.002)
    assert onset(speech, r16, after=1.0) == pytest.approx(2.0, abs=0.002)

    stamp = media.mix_wav.stat().st_mtime_ns
    again = ingest(path, tmp_path / "work")
    assert again == media and again.mix_wav.stat().st_mtime_ns == stamp  # reused, not rewritten


@pytest.mark.parametrize("delay", [0.4, -0.4])
def test_ingest_respects_audio_offset(tmp_path, delay):
    """Audio starting after (or before) the first video frame lands at the right time, padded/trimmed."""
    path = make_video(tmp_path / "v.mp4", 2.0, 25, audio=clicks(2.0, 48_000, [0.6]), audio_delay=delay)
    info = probe(path)
    # the stream's start includes the AAC encoder's priming frame when the muxer keeps it (1024 samples)
    assert info.audio_start_time - info.start_time == pytest.approx(delay, abs=1100 / 48_000)
    media = ingest(path, tmp_path)
    mix, rate = read_wav(media.mix_wav)
    assert mix.shape[0] == round(media.duration * rate)
    assert onset(mix, rate) == pytest.approx(0.6 + delay, abs=0.002)


def test_ingest_without_audio(tmp_path):
    media = ingest(make_video(tmp_path / "silent.mp4", 1.0, 25), tmp_path)
    assert media.speech_wav is None and media.mix_wav is None and media.audio_language == "und"
    assert media.frame_count == 25


def two_language_video(path: Path, seconds: float = 2.0) -> Path:
    """A French commentary (300 Hz) as the first audio stream and English (700 Hz) as the second."""
    import subprocess

    import imageio_ffmpeg

    fr = make_video(path.with_name("fr-part.mp4"), seconds, audio=tone(seconds, 48_000, 300.0))
    en = make_video(path.with_name("en-part.mp4"), seconds, audio=tone(seconds, 48_000, 700.0))
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(fr), "-i", str(en), "-map", "0:v",
                    "-map", "0:a", "-map", "1:a", "-c", "copy", "-metadata:s:a:0", "language=fra",
                    "-metadata:s:a:1", "language=eng", str(path)], check=True)
    return path


def dominant_hz(data: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(data[:, 0]))
    return float(np.argmax(spectrum) * rate / len(data))


def test_audio_stream_by_language_tag_or_index(tmp_path):
    path = two_language_video(tmp_path / "two.mp4")
    assert probe(path).audio_index == 0  # no language asked: the first
    info = probe(path, language="en")
    assert (info.audio_index, info.audio_language, info.audio_languages) == (1, "eng", ("fra", "eng"))
    assert probe(path, language="fr-CA").audio_index == 0
    assert probe(path, language="en", audio_stream=0).audio_index == 0  # source.audio_stream wins
    with pytest.raises(InputError, match=r"source\.audio_stream: no audio stream 2: the file has audio streams 0\.\.1"):
        probe(path, audio_stream=2)

    english = ingest(path, tmp_path / "work", language="en")
    assert english.audio_stream == 1
    data, rate = read_wav(english.mix_wav)
    assert dominant_hz(data, rate) == pytest.approx(700.0, abs=2.0)
    french = ingest(path, tmp_path / "work", language="en", audio_stream=0)
    assert french.mix_wav != english.mix_wav
    data, rate = read_wav(french.mix_wav)
    assert dominant_hz(data, rate) == pytest.approx(300.0, abs=2.0)


def test_cover_art_is_not_a_video(tmp_path):
    """An .m4a with an attached picture is audio only: a clear InputError, not a 90000 fps video."""
    import subprocess

    import cv2
    import imageio_ffmpeg

    song = make_video(tmp_path / "song.mp4", 2.0, audio=tone(2.0, 48_000))
    cover = tmp_path / "cover.jpg"
    cv2.imwrite(str(cover), np.full((144, 176, 3), 128, np.uint8))
    m4a = tmp_path / "song.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(song), "-i", str(cover),
                    "-map", "0:a", "-map", "1:v", "-c:a", "copy", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic",
                    str(m4a)], check=True)
    with pytest.raises(InputError, match=r"source\.video: no video stream \(its only picture is attached cover art"):
        probe(m4a)
