"""`dubforge submit` and `dubforge status`: flow runs of the `dub-project` deployments, through the Prefect API.

The manifest and OUT are passed as absolute paths, which the workers must see at the same place, or as fsspec
URLs of shared storage (docs/service.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from dubforge.flows.storage import local_path
from dubforge.flows.targets import deployment_for, parameters_for


@dataclass
class RunStatus:
    id: str
    name: str
    state: str  # Prefect state name: Scheduled, Pending, Running, Completed, Failed, Crashed, Cancelled...
    final: bool
    completed: bool
    message: str
    deployment: str | None
    url: str
    languages: dict[str, str]  # language -> status, from the run's `<project>-dub-report` artifact once written
    errors: dict[str, str]  # language -> why it failed


def ui_url_for(flow_run_id: str) -> str:

    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def submit(manifest: str | Path, languages: list[str] | None = None, out_dir: str | Path | None = None,
           deployment: str | None = None, idempotency_key: str | None = None, local_copy: Path | None = None) -> str:
    """Create a flow run of the deployment (not waiting for it); return its id. `local_copy`: the manifest's
    staged copy when `manifest` is a URL (to pick the deployment)."""

    deployment = deployment or deployment_for(local_copy or local_path(manifest))
    run = run_deployment(deployment, parameters=parameters_for(manifest, languages, out_dir),
                         timeout=0, as_subflow=False, idempotency_key=idempotency_key)
    assert isinstance(run, FlowRun)  # the sync API returns the flow run itself
    return str(run.id)


def _report_rows(client, flow_run_id: UUID) -> list[dict[str, Any]]:

    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(like_="%-dub-report")))
    for artifact in artifacts:
        if isinstance(artifact.data, str):

            return json.loads(artifact.data)
        return list(artifact.data or [])
    return []


def status(flow_run_id: str) -> RunStatus:

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        deployment = None
        if run.deployment_id:
            dep = client.read_deployment(run.deployment_id)
            flow = client.read_flow(dep.flow_id)
            deployment = f"{flow.name}/{dep.name}"
        state = run.state
        final = bool(state and state.is_final())
        completed = bool(state and state.is_completed())
        rows = _report_rows(client, run.id) if final else []
        return RunStatus(id=str(run.id), name=run.name, state=(state.name or "Unknown") if state else "Unknown", final=final,
                         completed=completed, message=(state.message or "") if state else "", deployment=deployment,
                         url=ui_url_for(str(run.id)), languages={r["language"]: r["status"] for r in rows},
                         errors={r["language"]: r.get("detail", "") for r in rows if r["status"] != "completed"})


def wait(flow_run_id: str, poll: float = 1.0, timeout: float | None = None, on_change=lambda status: None) -> RunStatus:
    """Poll until the run is final (Completed, Failed, Crashed, Cancelled); report each new state."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        current = status(flow_run_id)
        if current.state != last:
            on_change(current)
            last = current.state
        if current.final:
            return current
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} is still {current.state} after {timeout:.0f} s")
        time.sleep(poll)
