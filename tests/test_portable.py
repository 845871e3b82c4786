"""Cache records and keys that survive moving a project folder."""

from __future__ import annotations

import base64
from pathlib import Path

from dubforge.core.contracts import Stems
from dubforge.flows import portable
from dubforge.media.files import fingerprint


def test_records_are_stored_relative_and_read_against_the_new_folder(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    record = {"stems": Stems(background=old / "out" / ".dubforge" / "work" / "bg.wav", mode="replace", backend="b"),
              "video": str(old / "media" / "v.mp4"), "elsewhere": "/usr/share/x.wav", "word": "es"}
    serializer = portable.PortableSerializer()
    with portable.project_roots(old / "out", old):
        blob = serializer.dumps(record)
        key = fingerprint(record, rebase=portable.split)
    assert str(old).encode() not in base64.decodebytes(blob)
    with portable.project_roots(new / "out", new):
        loaded = serializer.loads(blob)
        moved = {**record, "stems": loaded["stems"], "video": loaded["video"]}
        assert fingerprint(moved, rebase=portable.split) == key  # same cache key in the moved folder
    assert loaded["stems"].background == new / "out" / ".dubforge" / "work" / "bg.wav"
    assert loaded["video"] == str(new / "media" / "v.mp4")
    assert loaded["elsewhere"] == "/usr/share/x.wav" and loaded["word"] == "es"


def test_report_paths_relative_to_out(tmp_path):
    out = tmp_path / "proj" / "out"
    (out / "es").mkdir(parents=True)
    (out / "es" / "a.mp4").write_bytes(b"x")
    report = {"mp4": str(out / "es" / "a.mp4"), "manifest": str(tmp_path / "proj" / "p.yaml"), "n": 3,
              "other": "/etc/hosts", "list": [Path(out / "es" / "a.mp4")]}
    relative = portable.relative_to_out(report, out, tmp_path / "proj")
    assert relative == {"mp4": "es/a.mp4", "manifest": "../p.yaml", "n": 3, "other": "/etc/hosts", "list": ["es/a.mp4"]}
    back = portable.resolve_in_out({"mp4": "es/a.mp4", "status": "completed", "dir": "es"}, out)
    assert back == {"mp4": str(out / "es" / "a.mp4"), "status": "completed", "dir": "es"}
