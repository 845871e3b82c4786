"""Submit through the deployment, follow with `dubforge status --wait`, check everything through the Prefect API."""

from __future__ import annotations

import json
import uuid

import av
import pytest

from .conftest import artifacts, assert_deliverables_whole, project, task_runs

pytestmark = pytest.mark.service


def test_submit_runs_to_completion_on_a_worker(service):
    manifest = project(service.demo, "submit", ["es", "pt-BR"])
    submitted = service.cli("submit", str(manifest)).stdout.strip().splitlines()
    run_id = submitted[-1]
    uuid.UUID(run_id)  # the id alone on the last line
    assert f"{service.api_url.removesuffix('/api')}/runs/flow-run/{run_id}" in submitted[0]

    waited = service.cli("status", run_id, "--wait")
    assert "Completed" in waited.stdout and "es: completed" in waited.stdout and "pt-BR: completed" in waited.stdout

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
        deployment = client.read_deployment(run.deployment_id)
        pool = run.work_pool_name
    assert run.state.is_completed()
    assert (deployment.name, pool) == ("cpu", "dubforge-cpu")
    assert run.parameters["manifest"] == str(manifest)

    states = {t.name: t.state.name for t in task_runs(run_id)}
    for name in ("ingest", "transcribe", "align", "translate-es", "voice-pt-BR", "mix-es", "deliver-pt-BR", "master"):
        assert states[name] == "Completed", states

    found = artifacts(run_id)
    report_key = next(key for key in found if key.endswith("-dub-report"))  # scoped by project: <project>-dub-report
    table = found[report_key].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {r["language"]: r["status"] for r in rows} == {"es": "completed", "pt-BR": "completed"}
    assert report_key.replace("-dub-report", "-dub-summary") in found

    out = service.demo / "out-submit"
    report = json.loads((out / "report.json").read_text())
    assert all(s["state"] == "Completed" for s in report["stages"].values())
    with av.open(str(out / "es" / "submit.es.mp4")) as dub:
        assert dub.streams.audio[0].language == "spa"
        assert abs(float(dub.duration / av.time_base) - 8.0) < 0.2
    assert_deliverables_whole(out)

    again = service.cli("status", run_id)  # no --wait: the final state at once
    assert again.returncode == 0 and "Completed" in again.stdout


def test_invalid_manifest_is_refused_before_submitting(service, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nproject: Bad Name\nsource: {video: missing.mp4, language: en}\ntargets: []\n")
    result = service.cli("submit", str(bad), check=False)
    assert result.returncode == 2
    assert "project" in result.stderr and "targets" in result.stderr and "Flow run" not in result.stdout


def test_status_of_unknown_run_exits_2(service):
    result = service.cli("status", str(uuid.uuid4()), check=False)
    assert result.returncode == 2 and "No flow run" in result.stderr


def test_submit_a_manifest_on_s3_with_outputs_on_s3(service):
    """Shared storage as a URL: the workers fetch the project from the bucket and publish the outputs there."""
    if service.s3_env is None:
        pytest.skip("moto and s3fs are not installed")
    import fsspec

    from tests.s3server import upload_project

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("team")
    manifest = project(service.demo, "bucket", ["es", "de"])
    upload_project(fs, service.demo, "team/projects")
    run_id = service.submit(f"s3://team/projects/{manifest.name}", "--out", "s3://team/out/bucket")
    waited = service.cli("status", run_id, "--wait", check=False)
    assert waited.returncode == 0, waited.stdout + waited.stderr

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
    assert run.parameters == {"manifest": f"s3://team/projects/{manifest.name}", "out_dir": "s3://team/out/bucket"}
    report = json.loads(fs.cat("team/out/bucket/report.json"))
    assert report["manifest"] == f"s3://team/projects/{manifest.name}"
    assert {lang: r["status"] for lang, r in report["languages"].items()} == {"es": "completed", "de": "completed"}
    local = service.root / "bucket-out"
    fs.get("team/out/bucket/de/", str(local), recursive=True)
    with av.open(str(local / "bucket.de.mp4")) as dub:
        assert dub.streams.audio[0].language == "deu"
        assert dub.duration / 1e6 == pytest.approx(8.0, abs=0.25)
    assert not (service.demo / "out-bucket").exists()  # nothing written beside the local copy of the manifest
