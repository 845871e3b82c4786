"""Work pools, the GPU limit and the deployments of the dubforge service, created idempotently.

Deployments use a *module* entrypoint (`dubforge.flows.dub.dub_project`): a worker runs the flow from the
installed `dubforge` package (a venv on a machine, or the worker image), so no source checkout has to be
pulled or shared. Every function here is safe to call again: it updates what already exists.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import StateType
from prefect.deployments.runner import EntrypointType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from dubforge.flows.dub import dub_project
from dubforge.flows.scan_inbox import scan_inbox
from dubforge.flows.targets import DUB_CPU, DUB_GPU, GPU_TAG, ensure_tag_limit

CPU_POOL = "dubforge-cpu"  # audio stages: ingest .. mux, QC
GPU_POOL = "dubforge-gpu"  # projects with lip-sync renders
INBOX_FLOW = "scan-inbox"
INBOX = f"{INBOX_FLOW}/inbox"
INBOX_CRON = "*/5 * * * *"
ZOMBIES = "dubforge: crash unresponsive flow runs"
HEARTBEAT_S = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY on the workers (Prefect's minimum)
# The server judges a heartbeat by when it was sent but sees it only once its event pipeline gets to it, which a
# busy server does tens of seconds late: a live run must survive one late heartbeat (Prefect's own example uses 90 s).
ZOMBIE_MIN_S = 2 * HEARTBEAT_S


def ensure_process_pool(name: str, concurrency_limit: int | None = None, description: str = "") -> None:
    """Create (or keep) a `process` work pool; its flow-run limit is set to `concurrency_limit`."""

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", description=description,
                base_job_template=ProcessWorker.get_default_base_job_template()))
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit, description=description))


def ensure_zombie_automation(after_s: int = 90) -> UUID:
    """Prefect's "detect zombie flows" automation: a flow run whose heartbeats stop for `after_s` seconds (its
    worker was killed, its machine lost) is marked Crashed instead of staying Running forever. Flow runs send
    heartbeats when the workers have PREFECT_FLOWS_HEARTBEAT_FREQUENCY set (dubforge service up sets it)."""

    if after_s < ZOMBIE_MIN_S:
        raise ValueError(f"zombie detection needs at least {ZOMBIE_MIN_S} s, two heartbeats (got {after_s} s)")
    final = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
    wanted = Automation(
        name=ZOMBIES,
        description=f"A flow run with no heartbeat for {after_s} s is marked Crashed (flows/deployments.py)",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"}, expect={"prefect.flow-run.heartbeat", *final},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=after_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after_s} s: its worker or machine is gone")],
    )
    try:
        existing = cast(Automation, Automation.read(name=ZOMBIES))  # sync call: the object itself
    except ValueError:  # not found
        existing = cast(Automation, wanted.create())
    else:
        existing.trigger, existing.actions, existing.description = wanted.trigger, wanted.actions, wanted.description
        existing.update()
    assert existing.id is not None  # the server gave it one
    return existing.id


def deploy_dub(name: str, pool: str, description: str) -> UUID:

    return cast(UUID, dub_project.deploy(name=name, work_pool_name=pool, entrypoint_type=EntrypointType.MODULE_PATH,
                              description=description, tags=["dubforge"], print_next_steps=False, build=False,
                              push=False))


def deploy_inbox(inbox: Path, cron: str = INBOX_CRON, out_root: Path | None = None, target: str = DUB_CPU,
                 gpu_target: str = DUB_GPU) -> UUID:
    """The inbox scanner on `cron`; one scan at a time (deployment concurrency 1) so nothing is submitted twice."""

    parameters: dict[str, Any] = {"inbox": str(Path(inbox).absolute()), "deployment": target,
                                  "gpu_deployment": gpu_target}
    if out_root is not None:
        parameters["out_root"] = str(Path(out_root).absolute())
    return cast(UUID, scan_inbox.deploy(name=INBOX.split("/")[1], work_pool_name=CPU_POOL, cron=cron, parameters=parameters,
                             concurrency_limit=1, entrypoint_type=EntrypointType.MODULE_PATH, tags=["dubforge"],
                             description=f"Submit new or changed manifests in {inbox}", print_next_steps=False,
                             build=False, push=False))


def deploy_all(gpu_slots: int = 1, inbox: Path | None = None, inbox_cron: str = INBOX_CRON,
               out_root: Path | None = None, zombie_after_s: int = 90) -> dict[str, UUID]:
    """Pools, the `gpu` limit, zombie detection and every deployment, against the API in PREFECT_API_URL."""
    ensure_process_pool(CPU_POOL, description="dubforge audio stages (ingest .. QC)")
    ensure_process_pool(GPU_POOL, concurrency_limit=gpu_slots, description="dubforge projects with lip-sync renders")
    ensure_tag_limit(GPU_TAG, gpu_slots, replace=True)  # the admin sets the team-wide render slots
    ensure_zombie_automation(zombie_after_s)
    ids = {
        DUB_CPU: deploy_dub("cpu", CPU_POOL, "Dub a manifest (no lip-sync): audio stages on CPU workers"),
        DUB_GPU: deploy_dub("gpu", GPU_POOL, "Dub a manifest with lip-sync renders on GPU workers"),
    }
    if inbox is not None:
        ids[INBOX] = deploy_inbox(inbox, inbox_cron, out_root)
    return ids
