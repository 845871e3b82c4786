"""The demo with lip-sync on, through the CLI and Prefect: the delivered picture is re-rendered and scored."""

from __future__ import annotations

import json

import av
import pytest

from dubforge.demo.project import make_demo
from tests.test_end_to_end import dubforge_run

# The demo's targets (flows/artifacts.py LIPSYNC_TARGETS), graded by the independent scorer.
TARGETS = {"coverage": (0.95, None), "closure": (0.9, None), "correlation": (0.6, None), "preservation_db": (40.0, None),
           "seam_ratio": (None, 1.15), "range_ratio": (0.6, 1.25), "sharpness_ratio": (0.7, None)}


@pytest.fixture(scope="module")
def lipsync_demo(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("lips")
    manifest = make_demo(root, seconds=6, languages=["es"], lipsync=True)
    dubforge_run(manifest)
    return root


def test_picture_rerendered_with_source_timing(lipsync_demo):
    root = lipsync_demo
    with av.open(str(root / "media" / "demo.mp4")) as src, av.open(str(root / "out" / "es" / "demo.es.mp4")) as dub:
        source_pts = [f.pts for f in src.decode(video=0)]
        dubbed_pts = [f.pts for f in dub.decode(video=0)]
        assert dub.streams.video[0].average_rate == src.streams.video[0].average_rate
        assert dub.metadata.get("ai_modification") == "synthetic dubbed speech and lip movement"
    assert len(dubbed_pts) == len(source_pts)
    assert [p - dubbed_pts[0] for p in dubbed_pts] == [p - source_pts[0] for p in source_pts]


def test_scorecard_in_qc_meets_targets(lipsync_demo):
    qc = json.loads((lipsync_demo / "out" / "es" / "qc.json").read_text())
    card = qc["lipsync"]
    assert card["frames_rendered"] + card["frames_passed_through"] > 0
    assert abs(card["lag_frames"]) <= 1
    for metric, (low, high) in TARGETS.items():
        if low is not None:
            assert card[metric] >= low, (metric, card[metric])
        if high is not None:
            assert card[metric] <= high, (metric, card[metric])
    provenance = json.loads((lipsync_demo / "out" / "es" / "demo.es.mp4.provenance.json").read_text())
    assert any("lip-sync" in action["action"] for action in provenance["actions"])
