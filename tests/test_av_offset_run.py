"""A source whose audio starts 0.5 s before its picture, dubbed with lip-sync: the language MP4 (a rendered picture
starting at 0) and the master (the source picture) carry the dub at the same time relative to their first frame."""

from __future__ import annotations

import json
import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest

from dubforge.demo.project import make_demo
from tests.test_end_to_end import dubforge_run

RATE = 48_000


def track_from_first_frame(path, audio_index: int, seconds: float) -> np.ndarray:
    """Mono samples of audio track `audio_index`, sample 0 = the first video frame (PyAV timestamps)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first = float(video.start_time * video.time_base)
        stream = container.streams.audio[audio_index]
        out = np.zeros(round(seconds * RATE), np.float32)
        for frame in container.decode(stream):
            data = frame.to_ndarray().mean(axis=0)
            at = round((float(frame.pts * frame.time_base) - first) * frame.sample_rate)
            lo, hi = max(at, 0), min(at + len(data), len(out))
            if hi > lo:
                out[lo:hi] = data[lo - at : hi - at]
    return out


def lag_seconds(a: np.ndarray, b: np.ndarray, hop: int = RATE // 200) -> float:
    """How much later b's loudness envelope is than a's (5 ms steps, within ±1 s)."""
    env = [np.sqrt(np.add.reduceat(x**2, np.arange(0, len(x), hop))) for x in (a, b)]
    env = [(e - e.mean()) / (e.std() + 1e-9) for e in env]
    span = 200
    scores = [np.dot(env[0][max(0, -k):len(env[0]) - max(0, k)], env[1][max(0, k):len(env[1]) - max(0, -k)])
              for k in range(-span, span + 1)]
    return (int(np.argmax(scores)) - span) * hop / RATE


@pytest.fixture(scope="module")
def early_audio_demo(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("offset")
    manifest = make_demo(root, seconds=5, languages=["es"], lipsync=True)
    source = root / "media" / "demo.mp4"
    shifted = root / "media" / "shifted.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-itsoffset", "0.5", "-i", str(source), "-i",
                    str(source), "-map", "0:v", "-map", "1:a", "-c", "copy", str(shifted)], check=True)
    shifted.replace(source)  # the picture now starts 0.5 s after the audio
    dubforge_run(manifest)
    return root


def test_master_dub_keeps_the_offset_with_lipsync(early_audio_demo):
    root = early_audio_demo
    with av.open(str(root / "media" / "demo.mp4")) as src:
        v, a = src.streams.video[0], src.streams.audio[0]
        assert float(v.start_time * v.time_base) - float(a.start_time * a.time_base) == pytest.approx(0.5, abs=0.05)
        seconds = float(v.duration * v.time_base) if v.duration else 5.0
    delivered = track_from_first_frame(root / "out" / "es" / "demo.es.mp4", 0, seconds)
    with av.open(str(root / "out" / "demo.master.mkv")) as master:
        titles = [s.metadata.get("title", "") for s in master.streams.audio]
    dubbed = next(i for i, t in enumerate(titles) if "dubbed" in t)
    in_master = track_from_first_frame(root / "out" / "demo.master.mkv", dubbed, seconds)
    assert abs(lag_seconds(delivered, in_master)) <= 1 / 25, titles  # within one frame
    heard = json.loads((root / "out" / "es" / "qc.json").read_text())["back_transcription"]
    assert heard["heard"] == "mix" and heard["mix_residual_db"] < -20  # the file's track is the mix Whisper heard
