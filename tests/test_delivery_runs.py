"""Whole runs on a small scripted project: a failed language leaves nothing under a final name; Netflix
loudness measured independently (FFmpeg's ebur128 on the delivered file, gated to the delivered cues)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
import srt
import yaml
from typer.testing import CliRunner

from dubforge.cli import app
from tests.test_ingest import make_video, tone

runner = CliRunner()


def scripted_project(root: Path, seconds: float = 4.0, audio_delay: float = 0.0, codec: str = "libx264",
                     **changes) -> Path:
    """A tone bed under an English script, dubbed into Spanish from a file with espeak (no ASR, no MT)."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    bed = tone(seconds, 48_000, freq=220.0, level=0.05)
    video = "media/clip.mp4" if codec == "libx264" else "media/clip.mov"
    size = (160, 120) if codec == "libx264" else (320, 240)  # DNxHR has a minimum size
    make_video(root / video, seconds=seconds, size=size, audio=bed, audio_delay=audio_delay,
               language="eng", codec=codec)
    (root / "en.srt").write_text("1\n00:00:00,300 --> 00:00:02,000\nGood morning to everyone.\n\n"
                                 "2\n00:00:02,200 --> 00:00:03,600\nThank you all for coming.\n")
    (root / "es.srt").write_text("1\n00:00:00,300 --> 00:00:02,000\nBuenos días a todos.\n\n"
                                 "2\n00:00:02,200 --> 00:00:03,600\nGracias por venir.\n")
    data = {
        "version": 1,
        "project": "clip",
        "source": {"video": video, "language": "en", "script": "en.srt"},
        "targets": [{"language": "es", "translation": {"from": "file", "path": "es.srt"}, "voice": {"backend": "espeak"}}],
        "alignment": "pocketsphinx",
        "outputs": {"dir": "out", "subtitles": ["srt"]},
        **changes,
    }
    path = root / "clip.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def gated_ebur128(media: Path, cues: list[srt.Subtitle]) -> float:
    """Integrated loudness of the delivered audio where the delivered subtitles show dialogue (FFmpeg's meter)."""
    spans = "+".join(f"between(t,{c.start.total_seconds():.3f},{c.end.total_seconds():.3f})" for c in cues)
    err = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostats", "-i", str(media), "-map", "0:a:0",
         "-af", f"aselect='{spans}',asetpts=N/SR/TB,ebur128", "-f", "null", "-"],
        capture_output=True, text=True, check=True).stderr
    return float(re.search(r"I:\s+(-?[\d.]+) LUFS", err[err.rindex("Summary:"):]).group(1))


@pytest.fixture(scope="module")
def netflix(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("netflix")
    path = scripted_project(root, mix={"loudness": "netflix"})
    result = runner.invoke(app, ["run", str(path)])
    return root, result


def test_netflix_loudness_end_to_end(netflix):
    root, result = netflix
    assert result.exit_code == 0, result.output
    folder = root / "out" / "es"
    qc = json.loads((folder / "qc.json").read_text())
    assert qc["loudness"]["dialogue_gated"] and qc["loudness"]["pass"], qc["loudness"]
    cues = list(srt.parse((folder / "clip.es.srt").read_text()))
    assert len(cues) == 2
    assert gated_ebur128(folder / "clip.es.mp4", cues) == pytest.approx(-27.0, abs=1.5)
    assert (folder / "clip.es.mp4.provenance.json").is_file()


def test_failed_language_leaves_nothing_then_resumes(netflix, monkeypatch):
    root, first = netflix
    assert first.exit_code == 0, first.output
    path = scripted_project(root, mix={"loudness": "netflix"},
                            targets=[{"language": "de", "translation": {"from": "file", "path": "es.srt"},
                                      "voice": {"backend": "espeak"}}])
    import dubforge.tasks.deliver as deliver

    def broken(*_args, **_kwargs):
        raise OSError("provenance: disk full")

    monkeypatch.setattr(deliver, "write_provenance", broken)
    failed = runner.invoke(app, ["run", str(path)])
    assert failed.exit_code == 1, failed.output
    assert "provenance: disk full" in failed.output
    out = root / "out"
    assert not (out / "de").exists()  # the MP4 and qc.json were written, but never under a final name
    assert not (out / ".dubforge" / "staging").exists() or not any((out / ".dubforge" / "staging").iterdir())
    assert not [p for p in out.rglob(".*.part*")]

    monkeypatch.undo()
    again = runner.invoke(app, ["run", str(path)])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (out / "de").iterdir()) == [
        "clip.de.csv", "clip.de.dialogue.wav", "clip.de.mp4", "clip.de.mp4.provenance.json", "clip.de.srt", "qc.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["ingest"]["state"] == "Cached"  # finished work reused


def cli_run(*args: str) -> subprocess.CompletedProcess:
    """`dubforge run` in its own process, as a user runs it, against the test session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run([sys.executable, "-m", "dubforge", "run", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def one_clear_line(result: subprocess.CompletedProcess, expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "Error emitting" not in output, output
    failures = [line for line in output.splitlines() if "failed" in line.lower() or expected in line]
    assert len(failures) == 1 and expected in failures[0], output


def test_locked_out_is_one_line_exit_1(netflix):
    root, _ = netflix
    lock = root / "out" / ".dubforge" / "lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds OUT
        result = cli_run(str(root / "clip.yaml"))
    one_clear_line(result, "another dubforge run is writing to")


def test_moved_project_runs_from_its_new_place(netflix):
    root, _ = netflix
    moved = root.parent / (root.name + "-moved")
    root.rename(moved)
    try:
        result = cli_run(str(moved / "clip.yaml"))
        assert result.returncode == 0, result.stdout + result.stderr  # cached results held the old folder's paths
        report = json.loads((moved / "out" / "report.json").read_text())
        assert report["languages"] and all(r["status"] == "completed" for r in report["languages"].values()), report
        assert str(root) + "/" not in json.dumps(report["languages"])
    finally:
        moved.rename(root)


@pytest.mark.parametrize("codec,name", [("prores_ks", "prores"), ("dnxhd", "dnxhd")])
def test_prores_and_dnxhd_are_delivered_in_mov(tmp_path, prefect_api, codec, name):
    path = scripted_project(tmp_path, seconds=2.0, codec=codec,
                            targets=[{"language": "es", "translation": {"from": "file", "path": "es.srt"},
                                      "voice": {"backend": "espeak"}}])
    (tmp_path / "es.srt").write_text("1\n00:00:00,300 --> 00:00:01,500\nBuenos días.\n")
    (tmp_path / "en.srt").write_text("1\n00:00:00,300 --> 00:00:01,500\nGood morning.\n")
    checked = runner.invoke(app, ["validate", str(path)])
    assert checked.exit_code == 0 and f"MOV ({name} picture stream-copied" in " ".join(checked.output.split())
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    delivered = tmp_path / "out" / "es" / "clip.es.mov"
    assert (tmp_path / "out" / "es" / "clip.es.mov.provenance.json").is_file()
    with av.open(str(delivered)) as dub, av.open(str(tmp_path / "media" / "clip.mov")) as src:
        assert dub.streams.video[0].codec_context.name == src.streams.video[0].codec_context.name == name
        assert [bytes(p) for p in dub.demux(dub.streams.video[0]) if p.size] == \
            [bytes(p) for p in src.demux(src.streams.video[0]) if p.size]  # stream-copied
        assert dub.streams.audio[0].metadata.get("language") == "spa"
    assert (tmp_path / "out" / "clip.master.mkv").is_file()


def music(seconds: float, rate: int = 48_000) -> np.ndarray:
    """Chords, kick and shaker (the demo's instruments), no voice."""
    from scipy.signal import resample_poly

    from dubforge.demo.project import _add, _decaying_noise, _kick, _pad

    rng = np.random.default_rng(7)
    bed = resample_poly(_pad(round(seconds * rate) // 4 + 8, rate // 4, 2.5), 4, 1, axis=0)[: round(seconds * rate)]
    for i, when in enumerate(np.arange(0, seconds, 0.625)):
        if i % 2 == 0:
            _add(bed, when, _kick(), (0.5, 0.5))
        _add(bed, when + 0.3, 0.06 * _decaying_noise(rng, 0.06, 0.015), (0.3, 0.3))
    return (0.3 * bed / np.abs(bed).max()).astype(np.float32)


def test_music_only_source_is_a_warning_not_a_dub(tmp_path, prefect_api):
    (tmp_path / "media").mkdir()
    make_video(tmp_path / "media" / "song.mp4", seconds=6.0, size=(160, 120), audio=music(6.0))
    path = tmp_path / "song.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "project": "song", "source": {"video": "media/song.mp4", "language": "en"},
                                    "targets": [{"language": "pt-BR", "translation": {"from": "machine"}}]}))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "pt-BR: no speech found in the source" in " ".join(result.output.split())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["languages"]["pt-BR"]["status"] == "skipped"
    assert report["languages"]["pt-BR"]["warning"].startswith("no speech found")
    assert any("no speech found" in w for w in report["warnings"])
    assert not (tmp_path / "out" / "pt-BR").exists() and not (tmp_path / "out" / "song.master.mkv").exists()
