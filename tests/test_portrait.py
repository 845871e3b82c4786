"""A still photo + speech as the source: validation and the still video the pipeline works on."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dubforge.cli import app
from dubforge.media.audio import write_wav
from dubforge.media.probe import probe, probe_portrait
from dubforge.tasks.portrait import still_video


@pytest.fixture()
def photo_project(tmp_path):
    image = np.zeros((241, 321, 3), np.uint8)  # odd sizes: the still video must make them even
    cv2.circle(image, (160, 120), 80, (90, 140, 200), -1)
    cv2.imwrite(str(tmp_path / "face.png"), image)
    t = np.arange(int(1.5 * 48_000)) / 48_000
    write_wav(tmp_path / "speech.wav", (0.2 * np.sin(2 * np.pi * 200 * t))[:, None], 48_000)
    (tmp_path / "es.srt").write_text("1\n00:00:00,100 --> 00:00:01,200\nHola.\n")
    return tmp_path


def write_manifest(root, source):
    data = {"version": 1, "project": "portrait", "source": {"language": "en", **source},
            "targets": [{"language": "es", "translation": {"from": "file", "path": "es.srt"}}]}
    path = root / "portrait.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_still_video_matches_the_speech(photo_project, tmp_path):
    info = probe_portrait(photo_project / "face.png", photo_project / "speech.wav")
    assert (info.width, info.height, info.frame_count) == (320, 240, round(1.5 * 25))
    video = still_video(photo_project / "face.png", photo_project / "speech.wav", tmp_path / "work")
    probed = probe(video)
    assert probed.frame_count == info.frame_count and probed.has_audio
    assert abs(probed.duration - info.duration) < 1 / 25
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == info.frame_count
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() < 0.5  # a still (up to coding noise)
    assert still_video(photo_project / "face.png", photo_project / "speech.wav", tmp_path / "work") == video  # reused


def test_portrait_manifest_validates(photo_project):
    result = CliRunner().invoke(app, ["validate", str(write_manifest(photo_project, {"image": "face.png", "audio": "speech.wav"}))])
    assert result.exit_code == 0, result.output
    assert "still photo" in result.output


@pytest.mark.parametrize("source,expected", [
    ({"image": "face.png"}, "'image' needs 'audio'"),
    ({"image": "face.png", "video": "face.png", "audio": "speech.wav"}, "exactly one of 'video' or 'image'"),
    ({"image": "speech.wav", "audio": "speech.wav"}, "not an image"),
])
def test_portrait_bad_input(photo_project, source, expected):
    result = CliRunner().invoke(app, ["validate", str(write_manifest(photo_project, source))])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
