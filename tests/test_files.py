"""Atomic writes and the sweep of an interrupted run's temporaries: only what dubforge journaled goes."""

from __future__ import annotations

import hashlib
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


def test_file_hashes_are_kept_across_processes_until_the_file_changes(tmp_path, monkeypatch):
    """A hash is read once: a later process (the in-process memo cleared) takes it from the index by the file's
    stat; content written in place (same size, same path and inode) is hashed again."""
    from dubforge.core import files

    monkeypatch.setenv("DUBFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(files, "_INDEX", files._HashIndex())
    media = tmp_path / "media.bin"
    media.write_bytes(b"a" * 4096)
    reads: list[str] = []
    digest = files._digest
    monkeypatch.setattr(files, "_digest", lambda path: reads.append(path) or digest(path))

    def fresh_process_hash() -> str:
        files._sha256.cache_clear()
        monkeypatch.setattr(files, "_INDEX", files._HashIndex())  # a new connection, as a new process opens
        return files.sha256_file(media)

    first = fresh_process_hash()
    assert first == hashlib.sha256(b"a" * 4096).hexdigest() and len(reads) == 1
    assert fresh_process_hash() == first and len(reads) == 1  # from the index
    with open(media, "r+b") as handle:  # same size, same inode
        handle.write(b"b")
    changed = fresh_process_hash()
    assert changed == hashlib.sha256(b"b" + b"a" * 4095).hexdigest() and len(reads) == 2


def test_file_hashes_without_a_writable_cache(tmp_path, monkeypatch):
    from dubforge.core import files

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("DUBFORGE_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(files, "_INDEX", files._HashIndex())
    files._sha256.cache_clear()
    (tmp_path / "x").write_bytes(b"x")
    assert files.sha256_file(tmp_path / "x") == hashlib.sha256(b"x").hexdigest()


def test_a_measurement_is_kept_by_content(tmp_path, monkeypatch):
    """`measured` runs the measurement once per content and name, across processes; a changed file is measured."""
    from dubforge.core import files

    monkeypatch.setenv("DUBFORGE_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []

    def loudness(path: Path) -> float:
        calls.append(path)
        return float("-inf") if path.read_bytes() == b"" else -23.5

    media = tmp_path / "a.wav"
    media.write_bytes(b"abc")
    for _ in range(2):  # a second process: new connection, in-process memo cleared
        files._sha256.cache_clear()
        monkeypatch.setattr(files, "_INDEX", files._HashIndex())
        assert files.measured(media, "lufs-1", loudness) == -23.5
    assert len(calls) == 1
    assert files.measured(media, "lufs-2", loudness) == -23.5 and len(calls) == 2  # another measurement
    media.write_bytes(b"")
    assert files.measured(media, "lufs-1", loudness) == float("-inf") and len(calls) == 3
    assert files.measured(media, "lufs-1", loudness) == float("-inf") and len(calls) == 3
