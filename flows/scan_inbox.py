"""The `scan-inbox` flow: submit every new or changed manifest of an inbox folder once.

Deployed on a cron schedule (flows/deployments.py, deployment concurrency 1). Each new content hash
becomes one `dub-project` flow run (the GPU deployment when the manifest enables lip-sync), created with
an idempotency key of path + hash, so even a scan that dies between submitting and recording cannot
submit twice. Invalid manifests are recorded with their problems and retried only once they change.
Manifests that carry `schedule:` also get a schedule of their own on the deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments import run_deployment

from dubforge.core import inbox as box
from dubforge.core.errors import InputError
from dubforge.core.plan import make_plan
from dubforge.flows.targets import DUB_CPU, DUB_GPU, parameters_for


def _submit(candidate, deployment: str, gpu_deployment: str, out_root: str | None) -> dict[str, Any]:

    try:
        plan = make_plan(candidate.manifest)
    except InputError as error:
        return {"status": "invalid", "problems": [str(p) for p in error.problems]}
    target = gpu_deployment if plan.manifest.lipsync.enabled else deployment
    out_dir = Path(out_root) / candidate.manifest.stem if out_root else None
    run = cast(FlowRun, run_deployment(target, parameters=parameters_for(candidate.manifest, None, out_dir), timeout=0,
                         as_subflow=False, idempotency_key=f"inbox:{candidate.manifest}:{candidate.sha256}"))
    return {"status": "submitted", "flow_run_id": str(run.id), "deployment": target,
            "parameters": run.parameters}


def _sync_schedules(wanted: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Make the `inbox-*` schedules of each deployment exactly `wanted[deployment]` (slug -> spec)."""

    with get_client(sync_client=True) as client:
        for name, specs in wanted.items():
            deployment = client.read_deployment_by_name(name)
            existing = {s.slug: s for s in client.read_deployment_schedules(deployment.id)
                        if s.slug and s.slug.startswith("inbox-")}
            for slug, schedule in existing.items():
                if slug not in specs:
                    client.delete_deployment_schedule(deployment.id, schedule.id)
            for slug, spec in specs.items():
                cron = CronSchedule(cron=spec["cron"], timezone=spec["timezone"])
                if slug in existing:
                    client.update_deployment_schedule(deployment.id, existing[slug].id, active=True, schedule=cron,
                                                      parameters=spec["parameters"])
                else:
                    client.create_deployment_schedules(deployment.id, [DeploymentScheduleCreate(
                        schedule=cron, active=True, parameters=spec["parameters"], slug=slug)])


@flow(name="scan-inbox", log_prints=True)
def scan_inbox(inbox: str, deployment: str = DUB_CPU, gpu_deployment: str = DUB_GPU,
               out_root: str | None = None) -> list[dict[str, Any]]:
    """Submit new or changed manifests in `inbox`; return one row per manifest submitted (or rejected) now."""

    logger = get_run_logger()
    folder = Path(inbox)
    rows: list[dict[str, Any]] = []
    schedules: dict[str, dict[str, dict[str, Any]]] = {deployment: {}, gpu_deployment: {}}
    for candidate in box.candidates(folder):
        current = candidate.record
        if candidate.changed:
            outcome = _submit(candidate, deployment, gpu_deployment, out_root)
            current = box.record(folder, candidate, outcome)
            rows.append({"manifest": candidate.manifest.name, "sha256": candidate.sha256[:12], "status": outcome["status"],
                         "flow_run_id": outcome.get("flow_run_id", ""),
                         "detail": "; ".join(outcome.get("problems", [])) or outcome.get("deployment", "")})
            logger.info("%s: %s %s", candidate.manifest.name, outcome["status"],
                        outcome.get("flow_run_id") or "; ".join(outcome.get("problems", [])))
        if current and current.get("status") == "submitted":
            try:
                spec = box.manifest_schedule(candidate.manifest)
            except ValueError as error:
                logger.warning("%s", error)
                spec = None
            if spec:
                schedules[current["deployment"]][box.schedule_slug(candidate.manifest)] = {
                    **spec, "parameters": current["parameters"]}
    _sync_schedules(schedules)
    if rows:
        create_table_artifact(table=rows, key="inbox-submissions", description=f"Manifests submitted from {folder}")
    return rows
