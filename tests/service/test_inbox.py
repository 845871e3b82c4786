"""The inbox deployment: scheduled scans, each new or changed manifest submitted once, a record per manifest."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from dubforge.core import inbox as box

from .conftest import assert_deliverables_whole, project, wait

pytestmark = pytest.mark.service


def _scan() -> None:
    from prefect.deployments import run_deployment

    from dubforge.flows.deployments import INBOX

    run = run_deployment(INBOX, timeout=180, poll_interval=1, as_subflow=False)
    assert run.state.is_completed(), run.state


def _dub_runs(manifest: Path) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["cpu", "gpu"])))
    return [r for r in runs if r.parameters.get("manifest") == str(manifest) and not r.auto_scheduled]


@pytest.fixture(scope="module")
def inbox(service):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dubforge.flows.deployments import deploy_inbox

    folder = service.root / "inbox"
    folder.mkdir()
    for sub in ("media", "scripts"):
        shutil.copytree(service.demo / sub, folder / sub)
    shutil.copy(service.demo / "demo.yaml", folder / "demo.yaml")
    with temporary_settings(updates={PREFECT_API_URL: service.api_url}):  # module scope: outside the per-test API
        deploy_inbox(folder, cron="0 3 * * *", out_root=service.root / "inbox-out")
    return folder


def test_the_schedule_creates_scan_runs(service, inbox):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["inbox"])))
        scheduled = [r for r in runs if r.state.name == "Scheduled"]
        if scheduled:
            break
        assert time.monotonic() < deadline, "the inbox schedule created no runs in 60 s"
        time.sleep(1)
    assert all(r.expected_start_time.hour == 3 and r.expected_start_time.minute == 0 for r in scheduled)
    assert scheduled[0].parameters["inbox"] == str(inbox)


def test_new_and_changed_manifests_are_submitted_once(service, inbox):
    good = project(inbox, "alpha", ["es"])
    broken = inbox / "broken.yaml"
    broken.write_text("version: 1\nproject: broken\nsource: {video: media/none.mp4, language: en}\n"
                      "targets: [{language: es}]\n")
    _scan()
    record = box.read_record(inbox, good)
    assert record["status"] == "submitted" and record["sha256"] == box.sha256_file(good)
    assert box.read_record(inbox, broken)["status"] == "invalid"
    assert any("none.mp4" in p for p in box.read_record(inbox, broken)["problems"])
    assert [str(r.id) for r in _dub_runs(good)] == [record["flow_run_id"]]
    assert wait(record["flow_run_id"]).completed
    assert_deliverables_whole(service.root / "inbox-out" / "alpha")
    assert box.read_record(inbox, inbox / "demo.yaml")["status"] == "submitted"

    _scan()  # nothing new: nothing submitted, records untouched
    assert box.read_record(inbox, good) == record
    assert len(_dub_runs(good)) == 1

    data = yaml.safe_load(good.read_text())
    data["targets"][0]["voice"] = {"backend": "espeak", "rate": 0.95}
    good.write_text(yaml.safe_dump(data, sort_keys=False))
    _scan()
    changed = box.read_record(inbox, good)
    assert changed["flow_run_id"] != record["flow_run_id"]
    assert [h["flow_run_id"] for h in changed["history"]] == [record["flow_run_id"]]
    assert len(_dub_runs(good)) == 2
    assert wait(changed["flow_run_id"]).completed


def test_a_manifest_carries_its_own_schedule(service, inbox):
    scheduled = project(inbox, "nightly", ["es"], schedule={"cron": "30 2 * * *", "timezone": "UTC"})
    _scan()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("dub-project/cpu")
        schedules = {s.slug: s for s in client.read_deployment_schedules(deployment.id)}
    mine = schedules[box.schedule_slug(scheduled)]
    assert mine.schedule.cron == "30 2 * * *" and mine.parameters["manifest"] == str(scheduled)
    scheduled.unlink()
    _scan()
    with get_client(sync_client=True) as client:
        assert box.schedule_slug(scheduled) not in {s.slug for s in client.read_deployment_schedules(deployment.id)}
