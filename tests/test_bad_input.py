"""Bad input: every case exits 2 with a message naming the problem, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dubforge.cli import app
from dubforge.media.audio import write_wav
from tests.test_ingest import make_video

runner = CliRunner()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "media").mkdir()
    rate = 48_000
    t = np.arange(int(2.0 * rate)) / rate
    audio = np.stack([0.1 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    make_video(root / "media" / "clip.mp4", seconds=2.0, size=(160, 120), audio=audio)
    make_video(root / "media" / "silent.mp4", seconds=2.0, size=(160, 120))
    (root / "media" / "notes.mp4").write_text("this is not a video\n")
    cv2.imwrite(str(root / "media" / "face.png"), np.full((120, 160, 3), 128, np.uint8))
    write_wav(root / "media" / "voice.wav", audio, rate)
    (root / "media" / "-clip.mp4").write_bytes((root / "media" / "clip.mp4").read_bytes())
    (root / "scripts").mkdir()
    (root / "scripts" / "es.srt").write_text("1\n00:00:00,200 --> 00:00:01,500\nHola a todos.\n")
    (root / "scripts" / "late.srt").write_text("1\n00:00:00,200 --> 00:00:05,000\nDemasiado tarde.\n")
    (root / "scripts" / "empty.csv").write_text(
        "speaker,start_time,end_time,transcription,translation\n"
        "ana,0.2,1.0,Hello there,Hola\n"
        "ana,1.1,1.8,Goodbye,\n"
    )
    return root


def manifest(root: Path, name: str, **changes) -> Path:
    data = {
        "version": 1,
        "project": "clip",
        "source": {"video": "media/clip.mp4", "language": "en"},
        "targets": [{"language": "es", "translation": {"from": "file", "path": "scripts/es.srt"}, "voice": {"backend": "espeak"}}],
        "outputs": {"dir": f"out-{name}"},
    }
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


CASES = {
    "missing-file": ({"source__video": "media/nope.mp4"}, ["source.video", "file not found"]),
    "text-named-mp4": ({"source__video": "media/notes.mp4"}, ["source.video", "not a media file"]),
    "no-audio-no-script": ({"source__video": "media/silent.mp4"}, ["no audio track", "source.script"]),
    "unknown-language": ({"targets__0__language": "xx"}, ["targets[0].language", "unknown language code 'xx'"]),
    "unknown-key": ({"sourse": {"video": "media/clip.mp4"}}, ["sourse", "did you mean 'source'"]),
    "escaping-path": ({"source__video": "../../etc/passwd"}, ["source.video", "leaves the manifest's folder"]),
    "dash-file-name": ({"source__video": "media/-clip.mp4"}, ["source.video", "may not start with '-'"]),
    "script-past-video": (
        {"targets__0__translation": {"from": "file", "path": "scripts/late.srt"}},
        ["late.srt", "cue 1", "runs past the end of the video"],
    ),
    "empty-translation-line": (
        {"targets__0__translation": {"from": "file", "path": "scripts/empty.csv"}},
        ["empty.csv", "row 3", "empty line"],
    ),
    "lipsync-without-consent": ({"lipsync": {"enabled": True}}, ["rights.consent", "lipsync is enabled"]),
    "outputs-parent": ({"outputs": {"dir": ".."}}, ["outputs.dir", "inside the manifest's folder", "--out"]),
    "outputs-sibling": ({"outputs": {"dir": "../elsewhere"}}, ["outputs.dir", "inside the manifest's folder"]),
    "outputs-absolute": ({"outputs": {"dir": "/tmp/dubforge-elsewhere"}}, ["outputs.dir", "inside the manifest's folder"]),
    "outputs-manifest-folder": ({"outputs": {"dir": "media/.."}}, ["outputs.dir", "inside the manifest's folder"]),
    "audio-stream-out-of-range": ({"source__audio_stream": 3}, ["source.audio_stream", "no audio stream 3", "0..0"]),
    "speedup-over-cap": ({"timing": {"max_speedup": 1.6}}, ["timing.max_speedup", "at most 1.4"]),
    "wav2lip-photo": (
        {"source": {"image": "media/face.png", "audio": "media/voice.wav", "language": "en"}, "rights": {"consent": True},
         "lipsync": {"enabled": True, "backend": "wav2lip"}},
        ["lipsync.backend", "cannot animate a still photo", "mouth-bank"],
    ),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_and_writes_nothing(project, case, command):
    changes, expected = CASES[case]
    path = manifest(project, case, **changes)
    before = sorted(p.name for p in project.rglob("*"))
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert "Traceback" not in result.output
    assert sorted(p.name for p in project.rglob("*")) == before  # nothing written


def test_every_problem_is_listed_at_once(project):
    path = manifest(project, "many", source__video="media/nope.mp4", targets__0__language="xx", lipsync={"enabled": True})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "3 problems" in result.output


def test_missing_manifest_and_bad_yaml(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "manifest file not found" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nproject: [unclosed\n")
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 2 and "invalid YAML: line" in result.output


def test_valid_manifest_prints_plan(project):
    result = runner.invoke(app, ["validate", str(manifest(project, "good"))])
    assert result.exit_code == 0, result.output
    assert "clip" in result.output and "espeak" in result.output and "voice_over" in result.output


def test_languages_option_must_name_targets(project):
    result = runner.invoke(app, ["validate", str(manifest(project, "langs")), "--languages", "de"])
    assert result.exit_code == 2 and "not a target" in result.output


def test_validate_warns_when_the_audio_tag_disagrees(project, tmp_path):
    from tests.test_ingest import two_language_video

    two_language_video(project / "media" / "two.mp4")
    chosen = runner.invoke(app, ["validate", str(manifest(project, "by-tag", source__video="media/two.mp4"))])
    assert chosen.exit_code == 0 and "⚠" not in chosen.output, chosen.output  # English found by its tag
    forced = manifest(project, "forced", source__video="media/two.mp4", source__audio_stream=0)
    result = runner.invoke(app, ["validate", str(forced)])
    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert "source.language is 'en' but the audio stream used (0) is tagged 'fra' (audio streams 0: fra, 1: eng)" in message


def test_status_when_the_server_is_unreachable_exits_1():
    """A network failure is not invalid input: one line and exit 1 (2 means the user's input is wrong)."""
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing listens on the discard port
           "PREFECT_CLIENT_MAX_RETRIES": "0"}
    result = subprocess.run([sys.executable, "-m", "dubforge", "status", "5d2b0c59-8f0e-4a5e-9b1e-0c7a3b1f2d44"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Could not read flow run" in result.stderr and "Traceback" not in result.stderr


def test_status_of_a_malformed_run_id_exits_2():
    result = CliRunner().invoke(app, ["status", "not-a-run-id"])
    assert result.exit_code == 2, result.output
    assert "No flow run 'not-a-run-id'" in result.output
