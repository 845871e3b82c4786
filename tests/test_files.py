"""Atomic writes and the sweep of an interrupted run's temporaries: only what dubforge journaled goes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dubforge.core.files import JOURNAL, atomic_path, claim_output_folder, sweep_temporaries

KILLED_WRITE = """
import os, sys
from pathlib import Path
from dubforge.core.files import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half")
    os._exit(9)  # killed mid-write: no rename, no cleanup
"""


def killed_write(path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)])
    assert result.returncode == 9


@pytest.mark.parametrize("out_name", ["out", "."])  # outputs.dir inside the project, or --out on the project itself
def test_sweep_removes_only_journaled_temporaries(tmp_path, out_name):
    project = tmp_path / "proj"
    (project / "media").mkdir(parents=True)
    users = [project / "media" / ".take1.part.mov", project / ".notes.part.txt"]
    for path in users:
        path.write_text("the user's own file")
    out = (project / out_name).resolve()
    claim_output_folder(out)
    (out / "es").mkdir(parents=True, exist_ok=True)
    foreign = out / "es" / ".clip.es.part.mp4"  # named like ours, but never journaled
    foreign.write_text("not ours")

    killed_write(out / "es" / "clip.es.mp4")
    leftovers = [p for p in (out / "es").iterdir() if p != foreign]
    assert len(leftovers) == 1 and ".part" in leftovers[0].name and not (out / "es" / "clip.es.mp4").exists()

    assert sweep_temporaries(out) == leftovers
    assert not leftovers[0].exists()
    assert not any((out / JOURNAL).iterdir())
    for path in [*users, foreign]:
        assert path.read_text()


def test_unclaimed_folder_is_never_swept(tmp_path):
    killed_write(tmp_path / "a.txt")
    leftovers = list(tmp_path.glob(".a.*.part.txt"))
    assert len(leftovers) == 1
    assert sweep_temporaries(tmp_path) == [] and leftovers[0].exists()


def test_atomic_write_leaves_no_record(tmp_path):
    claim_output_folder(tmp_path)
    with atomic_path(tmp_path / "x" / "a.json") as tmp:
        tmp.write_text("{}")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x" / "b.json") as tmp:
        tmp.write_text("{")
        raise RuntimeError("failed")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["a.json"]
    assert not any((tmp_path / JOURNAL).iterdir())
