"""The model registry (models.yaml) and `dubforge models add/check`; needs no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def test_add_records_backend_hash_licence_and_relative_path(tmp_path):
    from dubforge.core import model_store

    weights = tmp_path / "w" / "wav2lip_gan.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights")
    registry = tmp_path / "models.yaml"
    entry = model_store.add(registry, "wav2lip", weights)
    assert entry.backend == "wav2lip" and "non-commercial" in entry.licence
    raw = yaml.safe_load(registry.read_text())["models"]["wav2lip"]
    assert raw["path"] == "w/wav2lip_gan.pth" and len(raw["sha256"]) == 64
    assert model_store.load(registry)["wav2lip"].path == weights.resolve()
    assert model_store.resolve("wav2lip", "wav2lip", registry) == weights.resolve()
    (result,) = model_store.check(registry)
    assert not result.loads and result.message  # garbage weights (or no torch): says why


def test_changed_weights_and_bad_entries_are_reported(tmp_path):
    from dubforge.core import model_store
    from dubforge.core.errors import InputError, StageError

    repo = tmp_path / "demucs"
    repo.mkdir()
    (repo / "abc-1234.th").write_bytes(b"x")
    registry = tmp_path / "models.yaml"
    model_store.add(registry, "htdemucs", repo)
    (repo / "abc-1234.th").write_bytes(b"y")
    (result,) = model_store.check(registry)
    assert result.exists and not result.sha_ok
    with pytest.raises(StageError, match="is a demucs model, not coqui"):
        model_store.resolve("htdemucs", "coqui", registry)
    with pytest.raises(StageError, match=r"dubforge models add xtts_v2 PATH --backend coqui"):
        model_store.resolve("xtts_v2", "coqui", registry)
    registry.write_text("models:\n  x: {backend: nope, path: a}\n  y: 3\n")
    with pytest.raises(InputError) as err:
        model_store.load(registry)
    assert len(err.value.problems) == 2 and "unknown backend 'nope'" in str(err.value)
    with pytest.raises(InputError, match="cannot tell which backend"):
        model_store.add(registry, "z", tmp_path)


def test_cli_add_and_check(tmp_path):
    folder = tmp_path / "XTTS-v2"
    folder.mkdir()
    (folder / "model.pth").write_bytes(b"0")
    (folder / "config.json").write_text("{}")
    run = [sys.executable, "-m", "dubforge", "models"]
    cwd = Path(__file__).parents[2]
    env = {"DUBFORGE_MODELS": str(tmp_path / "models.yaml"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    added = subprocess.run(run + ["add", "xtts_v2", str(folder)], capture_output=True, text=True, cwd=cwd, env=env)
    assert added.returncode == 0, added.stderr
    assert "xtts_v2: coqui" in added.stdout
    checked = subprocess.run(run + ["check"], capture_output=True, text=True, cwd=cwd, env=env)
    assert checked.returncode == 1  # the weights are not a real model: listed, with the reason
    out = " ".join(checked.stdout.split())
    for text in ("xtts_v2", "backend=coqui", "sha256:", "licence:", "non-commercial", "does not load"):
        assert text in out, checked.stdout
    missing = subprocess.run(run + ["add", "x", str(tmp_path / "nothing")], capture_output=True, text=True, cwd=cwd, env=env)
    assert missing.returncode == 2 and "not found" in missing.stderr
