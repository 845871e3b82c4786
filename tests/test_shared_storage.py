"""Manifests and outputs on an fsspec URL: a real S3 protocol server (moto) and s3fs, through `dubforge run`.

A second run with an empty staging folder stands for another worker: it must get everything from the bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

from dubforge.core.files import sha256_file
from dubforge.demo.project import make_demo

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "dub-team"
PROJECT = f"s3://{BUCKET}/projects/demo"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    import fsspec

    from tests.s3server import s3_server, upload_project

    with s3_server() as env:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        local = tmp_path_factory.mktemp("project")
        make_demo(local, seconds=8, languages=["es", "pt-BR"])
        upload_project(fs, local, PROJECT.removeprefix("s3://"))
        yield fs, env


def run(args: list[str], env: dict[str, str], staging: Path) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    full = {**os.environ, **env, "PREFECT_API_URL": PREFECT_API_URL.value(), "DUBFORGE_STAGING": str(staging)}
    return subprocess.run([sys.executable, "-m", "dubforge", *args], capture_output=True, text=True, env=full, timeout=600)


def stage_states(report: dict) -> dict[str, str]:
    lanes = {"shared": report["stages"], **{lang: r["stages"] for lang, r in report["languages"].items()}}
    return {f"{lane}/{stage}": s["state"] for lane, stages in lanes.items() for stage, s in stages.items()}


def test_run_on_s3_publishes_whole_deliverables_and_another_worker_reuses_them(s3, tmp_path, prefect_api):
    fs, env = s3
    staging = tmp_path / "staging"  # at the same path on every worker (cache records name work files)
    first = run(["run", f"{PROJECT}/demo.yaml"], env, staging)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Report: {PROJECT}/out/report.json" in first.stdout

    out = f"{PROJECT.removeprefix('s3://')}/out"
    names = {p.removeprefix(out + "/") for p in fs.find(out)}
    assert {"es/demo.es.mp4", "pt-BR/demo.pt-BR.mp4", "demo.master.mkv", "report.json"} <= names
    assert not [n for n in names if ".part" in n or n.endswith("/lock")], names  # no partial files, no lock
    assert any(n.startswith(".dubforge/cache/") for n in names)  # Prefect's cache records are shared too

    fetched = tmp_path / "fetched"
    fs.get(f"{out}/es/", str(fetched / "es"), recursive=True)
    mp4 = fetched / "es" / "demo.es.mp4"
    with av.open(str(mp4)) as container:
        assert container.streams.video and container.streams.audio
        assert container.duration / 1e6 == pytest.approx(8.0, abs=0.25)
        assert container.metadata.get("ai_modified") or container.metadata.get("comment")
    provenance = json.loads((fetched / "es" / "demo.es.mp4.provenance.json").read_text())
    assert provenance["asset"]["sha256"] == sha256_file(mp4)

    # another worker (nothing staged yet), with a deliverable deleted in the bucket meanwhile
    shutil.rmtree(staging)
    fs.rm(f"{out}/pt-BR/demo.pt-BR.mp4")
    second = run(["run", f"{PROJECT}/demo.yaml"], env, staging)
    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads(fs.cat(f"{out}/report.json"))
    states = stage_states(report)
    recomputed = {k: v for k, v in states.items() if v != "Cached"}
    assert recomputed == {"pt-BR/deliver": "Completed"}, states  # only the deleted file's stage ran again
    fs.invalidate_cache()
    assert fs.isfile(f"{out}/pt-BR/demo.pt-BR.mp4")
    assert fs.cat(f"{out}/es/demo.es.mp4") == mp4.read_bytes()


def test_bad_urls_are_clear_input_errors(s3, tmp_path, prefect_api):
    _fs, env = s3
    missing = run(["validate", f"{PROJECT}/nope.yaml"], env, tmp_path)
    assert missing.returncode == 2
    assert f"{PROJECT}/nope.yaml: manifest file not found" in missing.stderr.replace("\n", "")
    unknown = run(["validate", "nosuchfs://bucket/alpha.yaml"], env, tmp_path)
    assert unknown.returncode == 2 and "cannot open this storage URL" in unknown.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr


def test_manifest_problems_name_the_url(s3, tmp_path, prefect_api):
    fs, env = s3
    data = fs.cat(f"{PROJECT.removeprefix('s3://')}/demo.yaml").decode()
    fs.pipe(f"{PROJECT.removeprefix('s3://')}/broken.yaml", data.replace("video: ", "video: missing-").encode())
    result = run(["validate", f"{PROJECT}/broken.yaml"], env, tmp_path)
    assert result.returncode == 2
    assert f"{PROJECT}/broken.yaml: source.video" in result.stderr.replace("\n", "")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_staging_fetches_the_weights_that_models_yaml_keeps_beside_the_manifest(s3, tmp_path):
    from dubforge.flows.storage import stage_manifest

    fs, _env = s3
    remote = f"{PROJECT.removeprefix('s3://')}"
    fs.pipe(f"{remote}/models.yaml", b"models:\n  sep: {backend: demucs, path: weights/sep}\n")
    fs.pipe(f"{remote}/weights/sep/htdemucs.th", b"weights")
    try:
        local = stage_manifest(f"{PROJECT}/demo.yaml", into=tmp_path)
        assert (local.parent / "weights" / "sep" / "htdemucs.th").read_bytes() == b"weights"
        assert (local.parent / "media" / "demo.mp4").is_file()  # and the media the manifest names
    finally:
        fs.rm(f"{remote}/models.yaml")
        fs.rm(f"{remote}/weights", recursive=True)


def test_storage_errors_are_input_errors_naming_the_url(monkeypatch, tmp_path):
    from dubforge.core.errors import InputError
    from dubforge.flows import storage as shared_storage

    class Denied:
        def isfile(self, path):
            raise PermissionError("Access Denied")

    monkeypatch.setattr(shared_storage, "_filesystem", lambda url: (Denied(), url.removeprefix("s3://")))
    with pytest.raises(InputError, match=r"s3://locked/a\.yaml: cannot read from this storage: PermissionError: Access"):
        shared_storage.stage_manifest("s3://locked/a.yaml", into=tmp_path)


def test_publish_skips_sets_being_built_and_scratch_files_that_vanish(tmp_path, monkeypatch):
    """Another lane builds its language in .dubforge/staging/ (moved into place whole) and stages write scratch
    files that go while a publish lists the folder: neither is sent, and neither fails the publish."""
    import fsspec

    from dubforge.flows.storage import Mirror

    fs = fsspec.filesystem("memory")
    local = tmp_path / "out"
    building = local / ".dubforge" / "staging" / "pt-BR.1.new" / "demo.pt-BR.mp4"
    scratch = local / ".dubforge" / "work" / "heard" / "tmp1" / "group.wav"
    for path in (building, scratch, local / "es" / "qc.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    stamp = Mirror._stamp

    def gone_on_listing(path: Path) -> list[int]:
        if path.name == "group.wav":
            path.unlink(missing_ok=True)  # the stage finished with it between rglob and stat
        return stamp(path)

    monkeypatch.setattr(Mirror, "_stamp", staticmethod(gone_on_listing))
    assert Mirror(fs, "/bucket/out", local).publish() == 1
    assert [p.removeprefix("/bucket/out/") for p in fs.find("/bucket/out")] == ["es/qc.json"]
