"""Media fuzzing: damaged or absurd sources are refused by `validate` (exit 2, naming the file and what is wrong)
or fail the run with one clear line (exit 1); nothing is ever written under a final name."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tests.test_ingest import make_video, tone

runner = CliRunner()
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *map(str, args)], check=True)


def faststart(src: Path, out: Path) -> Path:
    ffmpeg("-i", src, "-c", "copy", "-movflags", "+faststart", out)
    return out


def make_cases(media: Path) -> dict[str, tuple[str, str]]:
    """name -> (file, expected fragment of the message)."""
    good = make_video(media / "good.mp4", 3.0, 25, size=(64, 48), audio=tone(3.0, 48_000))
    indexed = faststart(good, media / "indexed.mp4")  # index first: a cut file still has a valid header
    data = indexed.read_bytes()
    (media / "zero.mp4").write_bytes(b"")
    (media / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (media / "cut-indexed.mp4").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    start = data.find(b"mdat") + 8
    corrupt[start:] = np.random.default_rng(0).integers(0, 256, len(corrupt) - start, dtype=np.uint8).tobytes()
    (media / "corrupt.mp4").write_bytes(bytes(corrupt))
    make_video(media / "tiny.mp4", 0.4, 25, size=(2, 2), audio=tone(0.4, 48_000))
    make_video(media / "fast.mp4", 0.1, Fraction(1000), size=(64, 48), audio=tone(0.1, 48_000))
    ffmpeg("-f", "lavfi", "-i", "color=gray:s=8192x8192:d=0.04:r=25", "-f", "lavfi", "-i", "sine=d=0.04",
           "-c:v", "mjpeg", "-c:a", "aac", "-shortest", media / "huge.mov")
    ffmpeg("-i", good, "-map", "0:v", "-map", "0:a", "-c", "copy", "-frames:v", "0", media / "no-frames.mp4")
    # Matroska/WebM count no frames: a cut one still opens, with a header that declares the whole duration
    ffmpeg("-i", good, "-c", "copy", media / "whole.mkv")
    ffmpeg("-i", good, "-c:v", "libvpx", "-b:v", "200k", "-c:a", "libopus", media / "whole.webm")
    for name in ("whole.mkv", "whole.webm"):
        whole = (media / name).read_bytes()
        (media / name.replace("whole", "cut")).write_bytes(whole[: len(whole) // 2])
    return {
        "zero-byte": ("zero.mp4", "not a media file"),
        "truncated": ("cut.mp4", "not a media file"),
        "truncated-with-index": ("cut-indexed.mp4", "truncated or damaged"),
        "corrupt-stream": ("corrupt.mp4", "corrupt.mp4"),
        "1x1": ("tiny.mp4", "picture is 2x2: expected at least 16x16"),
        "8192x8192": ("huge.mov", "picture is 8192x8192"),
        "1000-fps": ("fast.mp4", "frame rate 1000 fps: expected at most 240"),
        "0-duration": ("no-frames.mp4", "source.video"),
        "truncated-mkv": ("cut.mkv", "cut.mkv: source.video: the file is truncated or damaged"),
        "truncated-webm": ("cut.webm", "cut.webm: source.video: the file is truncated or damaged"),
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, str]]]:
    root = tmp_path_factory.mktemp("badmedia")
    (root / "media").mkdir()
    return root, make_cases(root / "media")


CASES = ["zero-byte", "truncated", "truncated-with-index", "corrupt-stream", "1x1", "8192x8192", "1000-fps", "0-duration",
         "truncated-mkv", "truncated-webm"]


@pytest.mark.parametrize("case", CASES)
def test_bad_media_is_refused_or_fails_clearly(project, case, prefect_api):
    from dubforge.cli import app

    root, cases = project
    file, expected = cases[case]
    manifest = root / f"{case}.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "project": "x", "source": {"video": f"media/{file}"},
                                        "targets": [{"language": "pt-BR"}], "outputs": {"dir": f"out-{case}"}}))
    checked = runner.invoke(app, ["validate", str(manifest)])
    assert checked.exception is None or isinstance(checked.exception, SystemExit), checked.output
    if checked.exit_code == 0:  # not visible in the headers: the run must fail clearly
        result = runner.invoke(app, ["run", str(manifest)])
        assert result.exit_code == 1, result.output
        out = root / f"out-{case}"
        finals = [p for p in out.rglob("*") if p.is_file() and ".dubforge" not in p.relative_to(out).parts
                  and p.name != "report.json"]
        assert finals == [], finals
    else:
        result = checked
        assert result.exit_code == 2, result.output
        assert not (root / f"out-{case}").exists()
    message = " ".join(result.output.split())
    assert expected in message and "Traceback" not in result.output, message


@pytest.mark.parametrize("suffix", ["mkv", "webm"])
def test_truncated_matroska_is_refused_by_validate(project, suffix):
    """A cut MKV/WebM is caught by `validate` itself (exit 2 naming the file); the uncut file passes."""
    from dubforge.cli import app

    root, _ = project
    for name, code in ((f"whole.{suffix}", 0), (f"cut.{suffix}", 2)):
        manifest = root / f"matroska-{name}.yaml"
        manifest.write_text(yaml.safe_dump({"version": 1, "project": "x", "source": {"video": f"media/{name}"},
                                            "targets": [{"language": "pt-BR"}], "outputs": {"dir": "out-mkv"}}))
        result = runner.invoke(app, ["validate", str(manifest)])
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        if code:
            message = " ".join(result.output.split())
            assert f"{name}: source.video: the file is truncated or damaged: its video ends at" in message, message
    assert not (root / "out-mkv").exists()
