"""Lip-sync plumbing: quiet native logs, the background encoder, the scorecard's source cache, sharpness."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np

from dubforge.lipsync import compose
from dubforge.lipsync.video import EncodeThread, H264Writer, StreamInfo, copy_into, frames, plane_views, probe


def test_face_mesh_start_up_is_silent():
    code = (
        "import numpy as np\n"
        "from dubforge.lipsync.detect import FaceMesh\n"
        "with FaceMesh(1) as m:\n"
        "    for _ in range(3): m(np.zeros((240, 320, 3), np.uint8))\n"
        "import sys, os; os.write(2, b'a real error line\\n')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for noise in ("GetPrototype", "Feedback manager", "absl::InitializeLog", "XNNPACK"):
        assert noise not in out.stderr, out.stderr
    assert "a real error line" in out.stderr  # everything else still reaches stderr


def test_encode_thread_keeps_frames_and_timestamps(tmp_path):
    info = StreamInfo(64, 48, 25.0, Fraction(25), Fraction(1, 12800), 0)
    src = tmp_path / "src.mp4"
    with H264Writer(src, info, preset="ultrafast", crf=10) as writer:
        for i in range(30):
            buf = np.full((72, 64), 16 + 6 * i, np.uint8)
            buf[48:] = 128
            writer.write(buf, i * 512)
    out = tmp_path / "out.mp4"
    with H264Writer(out, probe(src), preset="ultrafast", crf=10) as writer:
        with EncodeThread(writer, depth=2) as pipe:
            for frame in frames(src):
                slot = pipe.acquire()
                copy_into(frame, slot[1])
                slot[1][0][:8, :8] = 255  # a mark, drawn into the pooled frame in place
                pipe.submit(slot, frame.pts)
        assert writer.count == 30
    got = list(frames(out))
    assert [f.pts for f in got] == [f.pts for f in frames(src)]
    lum = [plane_views(f.reformat(format="yuv420p"))[0] for f in got]
    assert all(y[:8, :8].mean() > 240 for y in lum)
    assert np.allclose([y[20:, 20:].mean() for y in lum], [16 + 6 * i for i in range(30)], atol=3)


def test_sharpen_to_match_reaches_the_source_texture():
    rng = np.random.default_rng(5)
    import cv2

    texture = cv2.GaussianBlur(rng.normal(128, 30, (80, 80)).astype(np.float32), (0, 0), 1.0)
    soft = cv2.GaussianBlur(texture, (0, 0), 0.8)
    state: dict = {}
    box = (10, 10, 70, 70)
    for _ in range(3):
        out = compose.sharpen_to_match(soft, texture[10:70, 10:70], box, state)
    lap = lambda a: cv2.Laplacian(a[10:70, 10:70], cv2.CV_32F).var()  # noqa: E731
    assert lap(soft) < 0.5 * lap(texture)
    assert 0.75 < lap(out) / lap(texture) < 1.25
    same = compose.sharpen_to_match(texture, texture[10:70, 10:70], box, {})
    assert np.array_equal(same, texture)  # already as sharp: untouched


def test_encode_loss_is_measured():
    rng = np.random.default_rng(1)
    import cv2

    buffers, boxes = [], []
    base = cv2.GaussianBlur(rng.normal(128, 40, (96, 128)).astype(np.float32), (0, 0), 0.7)
    for i in range(8):
        y = np.clip(np.roll(base, i, axis=1), 0, 255).astype(np.uint8)
        buffers.append(np.vstack([y, np.full((48, 128), 128, np.uint8)]))
        boxes.append((16, 16, 112, 80))
    lossy = compose.encode_loss(buffers, boxes, "veryfast", 35)
    near = compose.encode_loss(buffers, boxes, "veryfast", 0)
    assert lossy < 0.8 and near > 0.95 and lossy < near
