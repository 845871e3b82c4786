"""`make_demo`: the demo project's media, scripts and manifest have the promised properties."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dubforge.core.manifest import parse_manifest, resolve_input
from dubforge.demo.project import FPS, RATE, frame_count, make_demo, read_demo_lines
from dubforge.demo.script import LINES
from dubforge.media.audio import read_wav

SECONDS = 8.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    manifest = make_demo(out, seconds=SECONDS, languages=["es", "pt-BR"])
    assert manifest == out / "demo.yaml"
    return out


def _decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, dict]:
    import av

    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        info = {
            "codec": video.codec_context.name,
            "size": (video.codec_context.width, video.codec_context.height),
            "rate": video.average_rate,
            "audio_rate": audio.rate,
            "channels": audio.channels,
        }
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        sound = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1).T
    return frames, sound, info


@pytest.fixture(scope="module")
def decoded(demo):
    return _decode(demo / "media" / "demo.mp4")


def test_manifest_is_valid(demo):
    manifest = parse_manifest(demo / "demo.yaml")
    assert manifest.project == "demo" and manifest.source.language == "en"
    assert manifest.source.script is None  # the demo exercises ASR
    assert manifest.rights.consent
    assert [t.language for t in manifest.targets] == ["es", "pt-BR"]
    es, pt = manifest.targets
    assert es.translation.from_ == "file" and pt.translation.from_ == "machine"
    assert es.voice.backend == pt.voice.backend == "espeak"
    assert manifest.mix.loudness == "ebu-r128"
    for key, value in [("source.video", manifest.source.video), ("source.music_effects", manifest.source.music_effects),
                       ("targets[0].translation.path", es.translation.path)]:
        resolved, problem = resolve_input(manifest, key, value)
        assert problem is None and resolved.is_file()
    assert not (demo / "scripts" / "demo.pt-BR.srt").exists()


def test_video_format_and_length(decoded):
    frames, _, info = decoded
    assert info["codec"] == "h264"
    assert info["size"] == (1280, 720)
    assert info["rate"] == Fraction(30000, 1001)
    assert len(frames) == frame_count(SECONDS) == 240


def test_video_is_pillarboxed_and_ping_pong(decoded):
    frames, _, _ = decoded
    import cv2

    frame = frames[40].astype(np.float32)
    detail = np.abs(cv2.Laplacian(frame, cv2.CV_32F))
    assert detail[:, 300:980].mean() > 3 * detail[:, :180].mean()  # sharp picture, blurred side fill
    # 120 source frames played forward then backward: frame 100 comes back as frame 138
    same = np.abs(frames[100].astype(int) - frames[138]).mean()
    other = np.abs(frames[100].astype(int) - frames[20]).mean()
    assert same < 2.0 < other


def test_speech_sits_in_the_line_windows(demo, decoded):
    _, mix, info = decoded
    assert info["audio_rate"] == RATE and info["channels"] == 2
    bed, rate = read_wav(demo / "media" / "me.wav")
    lines = read_demo_lines(demo)
    assert len(lines) >= 2 and [line.index for line in lines] == list(range(len(lines)))
    assert abs(lines[0].start - 0.5) < 0.05
    for a, b in zip(lines, lines[1:]):
        assert 0.55 <= b.start - a.end <= 1.25
    assert lines[-1].end <= float(frame_count(SECONDS) / FPS) - 0.3

    def power(x: np.ndarray, start: float, end: float) -> float:
        return float(np.mean(x[int(start * rate) : int(end * rate)] ** 2))

    windows = [(line.start + 0.05, line.end - 0.05) for line in lines]
    gaps = [(0.1, lines[0].start - 0.1)] + [(a.end + 0.15, b.start - 0.15) for a, b in zip(lines, lines[1:])]
    # the bed's gain in the mix, from the pauses (where the mix is the bed alone)
    gain = sum(power(mix, *g) for g in gaps) / sum(power(bed, *g) for g in gaps)
    assert 0.5 < gain < 1.5
    speech_in_lines = [power(mix, *w) - gain * power(bed, *w) for w in windows]
    speech_in_gaps = [power(mix, *g) - gain * power(bed, *g) for g in gaps]
    floor = max(abs(x) for x in speech_in_gaps)
    assert min(speech_in_lines) > 50 * floor
    assert min(speech_in_lines) > 3 * gain * max(power(bed, *w) for w in windows)  # voice over the bed


def test_subtitles_follow_the_english_lines(demo):
    import srt

    lines = read_demo_lines(demo)
    cues = list(srt.parse((demo / "scripts" / "demo.es.srt").read_text(encoding="utf-8")))
    duration = float(frame_count(SECONDS) / FPS)
    assert len(cues) == len(lines)
    for cue, line in zip(cues, lines):
        assert cue.content == LINES[line.index]["es"]
        assert abs(cue.start.total_seconds() - line.start) < 0.002
        assert abs(cue.end.total_seconds() - line.end) < 0.002
        assert 0 <= cue.start.total_seconds() < cue.end.total_seconds() <= duration


def test_music_and_effects_stem(demo):
    import pyloudnorm

    bed, rate = read_wav(demo / "media" / "me.wav")
    assert rate == 48_000 and bed.shape[1] == 2
    assert bed.shape[0] == round(frame_count(SECONDS) / FPS * rate)  # exactly the video's length
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(bed.astype(np.float64)) - -28.0) < 1.0
    assert np.abs(bed[:, 0] - bed[:, 1]).mean() > 1e-4  # stereo, not dual mono


def test_rerun_reuses_files(demo):
    video = demo / "media" / "demo.mp4"
    before = video.stat().st_mtime_ns
    started = time.monotonic()
    make_demo(demo, seconds=SECONDS, languages=["es", "pt-BR"])
    assert time.monotonic() - started < 2.0
    assert video.stat().st_mtime_ns == before


def test_unsupported_language_is_refused(tmp_path):
    with pytest.raises(ValueError, match="es, de, fr, pt-BR"):
        make_demo(tmp_path, seconds=SECONDS, languages=["es", "ja"])
    assert not any(tmp_path.iterdir())
