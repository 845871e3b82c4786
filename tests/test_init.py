"""`dubforge init VIDEO --to es,de`: a commented manifest that validates as written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dubforge.core.errors import InputError
from dubforge.core.plan import make_plan
from dubforge.media import ffmpeg


def dubforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dubforge", *args], capture_output=True, text=True)


def test_init_writes_a_commented_manifest_that_validates(tmp_path):
    video = tmp_path / "Episode 01.mp4"
    ffmpeg.run(["-f", "lavfi", "-i", "testsrc=s=160x120:r=25:d=2", "-f", "lavfi", "-i", "sine=d=2",
                "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac", "-shortest", video])
    result = dubforge("init", str(video), "--to", "es,de,pt-BR")
    assert result.returncode == 0, result.stderr
    manifest = tmp_path / "episode-01.yaml"
    assert result.stdout.strip() == str(manifest)
    text = manifest.read_text()
    assert text.count("#") >= 15 and "video: Episode 01.mp4" in text
    # es and de have no bundled translation model: validate names exactly what to choose, and the rest is valid
    with pytest.raises(InputError) as problems:
        make_plan(manifest)
    assert [p.key for p in problems.value.problems] == ["targets[0].translation", "targets[1].translation"]
    plan = make_plan(manifest, languages=["pt-BR"])
    assert [lp.language for lp in plan.languages] == ["pt-BR"] and plan.manifest.project == "episode-01"

    again = dubforge("init", str(video), "--to", "es")
    assert again.returncode == 2 and "--force" in again.stderr
    bad = dubforge("init", str(video), "--to", "es,xx-nonsense-123", "--force")
    assert bad.returncode == 2 and "xx-nonsense-123" in bad.stderr
