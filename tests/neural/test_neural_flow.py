"""The whole flow with a neural backend chosen in the manifest: demucs (random weights, in models.yaml beside it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from dubforge.core import model_store
from tests.neural.conftest import NEEDS
from tests.test_ingest import make_video

pytest.importorskip("demucs", reason=NEEDS)


def test_manifest_selects_demucs_and_the_mix_replaces_dialogue(tmp_path, demucs_repo, prefect_api):
    from dubforge.flows.dub import dub_project
    from dubforge.media.audio import read_wav

    rate = 48_000
    t = np.arange(int(3.0 * rate)) / rate
    audio = np.stack([0.2 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1).astype(np.float32)
    make_video(tmp_path / "clip.mp4", seconds=3.0, size=(160, 120), audio=audio)
    (tmp_path / "es.srt").write_text("1\n00:00:00,300 --> 00:00:02,400\nHola a todos.\n")
    model_store.add(tmp_path / "models.yaml", "tiny", demucs_repo)
    manifest = tmp_path / "clip.yaml"
    manifest.write_text(yaml.safe_dump({
        "version": 1, "project": "clip", "separation": {"backend": "demucs", "model": "tiny"},
        "source": {"video": "clip.mp4", "language": "en"},
        "targets": [{"language": "es", "translation": {"from": "file", "path": "es.srt"}, "voice": {"backend": "espeak"}}],
    }))
    report = dub_project(manifest=str(manifest))
    assert report["languages"]["es"]["status"] == "completed", report
    assert "demucs" in report["separation"] and report["mix_mode"] == "replace"
    qc = json.loads((tmp_path / "out" / "es" / "qc.json").read_text())
    assert qc["backends"]["mix_mode"] == "replace" and "demucs" in qc["backends"]["separation"]
    dialogue = next((tmp_path / "out" / ".dubforge" / "work" / "separate").glob("*/dialogue.wav"))
    stem, stem_rate = read_wav(dialogue)
    assert stem_rate == rate and len(stem) == round(3.0 * rate)
