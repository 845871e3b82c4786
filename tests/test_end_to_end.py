"""The demo dubbed end to end through the CLI and Prefect, checked on the delivered files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import srt

from dubforge.core.files import sha256_file
from dubforge.demo.project import make_demo

LANGUAGES = ["es", "pt-BR"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("demo")
    manifest = make_demo(root, seconds=8, languages=LANGUAGES)
    dubforge_run(manifest)
    report = json.loads((root / "out" / "report.json").read_text())
    truth = json.loads((root / "demo-truth.json").read_text())
    return root, manifest, report, truth


def dubforge_run(manifest: Path) -> str:
    """`dubforge run` as a user runs it, against the test session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "200"}  # rich: a table that does not wrap
    result = subprocess.run([sys.executable, "-m", "dubforge", "run", str(manifest)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness and true peak by FFmpeg's own ebur128 filter (independent of our code)."""
    import imageio_ffmpeg

    err = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostats", "-i", str(path), "-map", "0:a:0", "-af", "ebur128=peak=true",
         "-f", "null", "-"], capture_output=True, text=True, check=True,
    ).stderr
    summary = err[err.rindex("Summary:"):]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return integrated, peak


def audio_of(path: Path, index: int = 0) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[index]
        chunks = [frame.to_ndarray().mean(axis=0) for frame in container.decode(stream)]
        return np.concatenate(chunks), stream.rate


def test_every_language_delivered(demo):
    root, _, report, _ = demo
    assert {lang: r["status"] for lang, r in report["languages"].items()} == {lang: "completed" for lang in LANGUAGES}
    for lang in LANGUAGES:
        folder = root / "out" / lang
        for suffix in ("mp4", "srt", "vtt", "csv", "dialogue.wav", "mp4.provenance.json"):
            assert (folder / f"demo.{lang}.{suffix}").is_file()
        assert (folder / "qc.json").is_file()
    assert (root / "out" / "demo.master.mkv").is_file()


@pytest.mark.parametrize("lang,iso", [("es", "spa"), ("pt-BR", "por")])
def test_streams_tags_and_duration(demo, lang, iso):
    root, _, _, truth = demo
    source = root / "media" / "demo.mp4"
    out = root / "out" / lang / f"demo.{lang}.mp4"
    with av.open(str(source)) as src, av.open(str(out)) as dub:
        sv, dv = src.streams.video[0], dub.streams.video[0]
        assert dv.codec_context.name == "h264" and (dv.width, dv.height) == (1280, 720)
        assert dv.average_rate == sv.average_rate
        assert [p.pts for p in dub.demux(dv) if p.size] == [p.pts for p in src.demux(sv) if p.size]  # stream-copied
    with av.open(str(out)) as dub:
        audio = dub.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.metadata.get("language") == iso
        assert dub.metadata.get("ai_modified") == "true" or "AI-modified" in json.dumps(dub.metadata)
        frame = 1 / float(dub.streams.video[0].average_rate)
        assert abs(dub.duration / 1e6 - truth["duration"]) <= frame + 1e-3


@pytest.mark.parametrize("lang", LANGUAGES)
def test_loudness_measured_independently(demo, lang):
    root = demo[0]
    integrated, peak = ebur128(root / "out" / lang / f"demo.{lang}.mp4")
    assert abs(integrated - (-23.0)) <= 1.0
    assert peak <= -1.0 + 0.3  # EBU R128 true-peak ceiling (AAC adds a little)
    qc = json.loads((root / "out" / lang / "qc.json").read_text())
    assert abs(qc["loudness"]["integrated_lufs"] - integrated) <= 0.5


@pytest.mark.parametrize("lang", LANGUAGES)
def test_subtitles_parse_and_stay_inside_video(demo, lang):
    root, _, _, truth = demo
    cues = list(srt.parse((root / "out" / lang / f"demo.{lang}.srt").read_text()))
    assert len(cues) == len(truth["lines"])
    for cue in cues:
        assert 0 <= cue.start.total_seconds() < cue.end.total_seconds() <= truth["duration"] + 1e-3
        assert cue.content.strip()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_dubbed_speech_where_source_speech_was(demo, lang):
    root, _, _, truth = demo
    dialogue, rate = audio_of(root / "out" / lang / f"demo.{lang}.mp4")
    music, mrate = audio_of(root / "media" / "demo.mp4")
    qc = json.loads((root / "out" / lang / "qc.json").read_text())
    for line, fitted in zip(truth["lines"], qc["segments"]):
        start, end = int(line["start"] * rate), int(line["end"] * rate)
        window = dialogue[start:end]
        voiced = np.mean(np.abs(window) > 0.02)  # share of samples well above the bed
        assert voiced > 0.3, f"{lang} line {line['index']}: no dubbed speech in its window"
        assert fitted["window"][0] == pytest.approx(line["start"], abs=0.15)  # ASR + alignment vs truth
        assert fitted["speed"] <= 1.25 + 1e-6


def test_master_has_every_track_tagged(demo):
    root = demo[0]
    with av.open(str(root / "out" / "demo.master.mkv")) as mkv:
        assert len(mkv.streams.video) == 1
        audio_languages = [s.metadata.get("language") for s in mkv.streams.audio]
        subtitle_languages = [s.metadata.get("language") for s in mkv.streams.subtitles]
    assert audio_languages == ["eng", "spa", "por"]
    assert subtitle_languages == ["spa", "por"]


def test_provenance_binds_to_the_delivered_file(demo):
    root = demo[0]
    for lang in LANGUAGES:
        mp4 = root / "out" / lang / f"demo.{lang}.mp4"
        record = json.loads(mp4.with_name(mp4.name + ".provenance.json").read_text())
        assert record["ai_modified"] is True
        assert record["asset"]["sha256"] == sha256_file(mp4)
        assert record["rights"]["consent"] is True
        assert record["source"]["sha256"] == sha256_file(root / "media" / "demo.mp4")


def test_second_run_is_all_cached_and_adding_a_language_runs_only_it(demo):
    root, manifest, _, _ = demo
    dubforge_run(manifest)
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["all_cached"], report
    mp4 = root / "out" / "es" / "demo.es.mp4"
    mtime = mp4.stat().st_mtime_ns
    # a deleted deliverable is rebuilt, the rest stays cached; a crashed run's temporary file is swept away
    (root / "out" / "pt-BR" / "demo.pt-BR.mp4").unlink()
    partial = root / "out" / "pt-BR" / ".demo.pt-BR.x1y2.part.mp4"
    partial.write_bytes(b"half a file")
    dubforge_run(manifest)
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["languages"]["pt-BR"]["stages"]["deliver"]["state"] == "Completed"
    assert report["languages"]["es"]["stages"]["deliver"]["state"] == "Cached"
    assert (root / "out" / "pt-BR" / "demo.pt-BR.mp4").is_file() and mp4.stat().st_mtime_ns == mtime
    assert not partial.exists()


def test_moved_project_reruns_all_cached(demo, tmp_path):
    """A copied project folder re-runs from its own cache: every stage Cached, report paths relative to OUT."""
    import shutil

    root, manifest, _, _ = demo
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, symlinks=True)
    os.chmod(moved / "out" / ".dubforge", 0o755)
    output = dubforge_run(moved / manifest.name)
    report = json.loads((moved / "out" / "report.json").read_text())
    assert report["all_cached"], report
    assert str(root) not in json.dumps(report) and str(moved) not in json.dumps(report)
    es = report["languages"]["es"]
    assert (moved / "out" / es["mp4"]).is_file() and (moved / "out" / report["master"]["mkv"]).is_file()

    # the terminal: the run's URL at the start and at the end, then a table per language
    urls = re.findall(r"Run: (http\S+/runs/flow-run/[0-9a-f-]{36})", output)
    assert len(urls) == 2 and urls[0] == urls[1], output
    for word in ("language", "status", "loudness", "fit", "lip-sync", "warnings", "es/demo.es.mp4", "LUFS pass"):
        assert word in output, output


def test_a_language_subset_keeps_the_other_languages(demo):
    """`--languages es` re-delivers es only; pt-BR stays in report.json and in the master's tracks."""
    from prefect.settings import PREFECT_API_URL

    root, manifest, _, _ = demo
    (root / "out" / "es" / "demo.es.mp4").unlink()  # es is re-delivered; the master must still carry pt-BR
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run([sys.executable, "-m", "dubforge", "run", str(manifest), "--languages", "es"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((root / "out" / "report.json").read_text())
    assert set(report["languages"]) == {"es", "pt-BR"}
    assert report["languages"]["pt-BR"]["previous_run"] and report["languages"]["pt-BR"]["status"] == "completed"
    assert report["languages"]["es"]["stages"]["deliver"]["state"] == "Completed"
    with av.open(str(root / "out" / "demo.master.mkv")) as mkv:
        assert [s.metadata.get("language") for s in mkv.streams.audio] == ["eng", "spa", "por"]


def test_prepare_review_sheet_then_fix_one_line(demo):
    """`dubforge prepare` writes review sheets; an edited line in the XLSX is the only one synthesised again."""
    import openpyxl
    import yaml
    from prefect.settings import PREFECT_API_URL

    root, manifest, _, _ = demo
    result = subprocess.run([sys.executable, "-m", "dubforge", "prepare", str(manifest)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    review = root / "out" / "review"
    csv_bytes = (review / "demo.es.review.csv").read_bytes()
    assert csv_bytes.startswith(b"\xef\xbb\xbfline_id,speaker,start_time,end_time,transcription,translation,characters,"
                                b"spoken_seconds,window_seconds,fit,glossary")
    book = openpyxl.load_workbook(review / "demo.es.review.xlsx")
    sheet = book.active
    header = [c.value for c in sheet[1]]
    rows = [dict(zip(header, (c.value for c in row))) for row in sheet.iter_rows(min_row=2)]
    assert [r["line_id"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 2
    assert all(r["transcription"] and r["translation"] and r["spoken_seconds"] > 0 for r in rows)  # source by time
    assert all(r["fit"] == "fits" or r["fit"].startswith(("needs x", "overflow")) for r in rows)
    tts = root / "out" / ".dubforge" / "work" / "voice" / "tts-es"
    before = set(tts.glob("*.wav"))  # prepare reused the run's per-line audio: nothing new at the natural rate

    edited = "Hola, gracias a todos."
    sheet.cell(2, header.index("translation") + 1).value = edited
    book.save(review / "demo.es.review.xlsx")
    data = yaml.safe_load(manifest.read_text())
    data["targets"][0]["translation"] = {"from": "file", "path": "out/review/demo.es.review.xlsx"}
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run([sys.executable, "-m", "dubforge", "run", str(manifest), "--languages", "es"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    new = set(tts.glob("*.wav")) - before
    assert 1 <= len(new) <= 2  # the edited line at its natural rate (and sped up, if it needs it); no other line
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["languages"]["es"]["stages"]["voice"]["state"] == "Completed"
    assert report["languages"]["pt-BR"]["previous_run"]
    cues = list(srt.parse((root / "out" / "es" / "demo.es.srt").read_text()))
    assert " ".join(c.content.replace("\n", " ") for c in cues).startswith(edited)


def test_a_failed_language_fails_the_run_and_the_ui_shows_every_lane(demo):
    """A language that fails (its translation model folder holds no model) ends the run Failed, not green; the summary still prints;
    every task is tagged and named by its language (blocked ones too); QC artifacts are published on cache hits,
    keyed by project, in readable units."""
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL

    root, manifest, _, _ = demo
    original = manifest.read_text()
    data = yaml.safe_load(original)
    broken = root / "not-a-model"  # passes validate (the folder exists), fails when the backend loads it
    broken.mkdir(exist_ok=True)
    data["targets"].append({"language": "fr", "translation": {"from": "machine", "backend": "ctranslate2",
                                                              "model": str(broken)}, "voice": {"backend": "espeak"}})
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
        result = subprocess.run([sys.executable, "-m", "dubforge", "run", str(manifest)], capture_output=True, text=True,
                                env=env)
    finally:
        manifest.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "report.json" in result.stdout and "fr" in result.stderr
    report = json.loads((root / "out" / "report.json").read_text())
    assert {lang: r["status"] for lang, r in report["languages"].items()} == {
        "es": "completed", "pt-BR": "completed", "fr": "failed"}

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    assert run.name == "demo" and run.state.is_failed() and "fr" in run.state.message
    names = {t.name: t for t in tasks}
    for lang in ("es", "pt-BR", "fr"):
        for stage in ("translate", "voice", "mix", "deliver"):
            # tasks blocked by the failed translation are never renamed: `voice-fr-7af`, still with the language
            task = next((t for name, t in names.items() if name == f"{stage}-{lang}" or
                         re.fullmatch(rf"{stage}-{lang}-[0-9a-f]+", name)), None)
            assert task is not None, (stage, lang, sorted(names))
            assert {"project:demo", f"lang:{lang}"} <= set(task.tags), task.tags
    assert {"project:demo", "lang:all"} <= set(names["ingest"].tags)
    assert names["voice-es"].state.name == "Cached" and names["translate-fr"].state.is_failed()
    blocked = [t for name, t in names.items() if re.fullmatch(r"(voice|mix|deliver)-fr(-[0-9a-f]+)?", name)]
    assert len(blocked) == 3 and all(t.state.name == "Skipped" and t.state.is_final() for t in blocked), blocked

    artifacts = {a.key: a for a in found if a.key}
    assert {"demo-qc-es", "demo-qc-pt-br", "demo-qc-es-summary", "demo-stages", "demo-dub-report"} <= set(artifacts)
    rows = artifacts["demo-qc-es"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d - \d\d:\d\d:\d\d\.\d\d", rows[0]["window"]), rows[0]
    assert re.fullmatch(r"x\d+\.\d\d", rows[0]["speed"]) and rows[0]["result"].split(":")[0] in ("pass", "FAIL")
    matrix = artifacts["demo-stages"].data
    matrix = {r["language"]: r for r in (json.loads(matrix) if isinstance(matrix, str) else matrix)}
    assert matrix["fr"]["translate"] == "Failed" and matrix["es"]["voice"] == "Cached"


def test_quiet_run_and_version(demo):
    from prefect.settings import PREFECT_API_URL

    root, manifest, _, _ = demo
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    quiet = subprocess.run([sys.executable, "-m", "dubforge", "run", str(manifest), "--quiet"], capture_output=True,
                           text=True, env=env, timeout=600)
    assert quiet.returncode == 0 and "Run:" not in quiet.stderr and "loudness" not in quiet.stdout
    assert quiet.stdout.strip().splitlines() == [f"Report: {root / 'out' / 'report.json'}"], quiet.stdout
    from typer.testing import CliRunner

    from dubforge.cli import app

    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and re.fullmatch(r"dubforge \S+ \(prefect \S+\)\n", version.stdout), version.stdout
