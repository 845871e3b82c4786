"""What the flow and the service share: the `dub-project` deployments, the parameters of a run of them (submit and
the inbox), and the `gpu` tag whose concurrency limit is the number of lip-sync renders at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from dubforge.flows.storage import location

DUB_FLOW = "dub-project"
DUB_CPU = f"{DUB_FLOW}/cpu"
DUB_GPU = f"{DUB_FLOW}/gpu"
GPU_TAG = "gpu"  # the tag on `lipsync-<lang>` tasks (flows/dub.py)


def ensure_tag_limit(tag: str, slots: int, *, replace: bool) -> None:
    """Prefect ignores a tag limit that does not exist, so it is created before any run needs it. `replace`:
    the service's setup (an admin's choice) sets it; a run (replace=False) only creates a missing one, so a
    manifest's `lipsync.slots` never overrides the team's limit."""
    with get_client(sync_client=True) as client:
        if not replace:
            try:
                client.read_concurrency_limit_by_tag(tag)
                return
            except ObjectNotFound:
                pass
        client.create_concurrency_limit(tag=tag, concurrency_limit=slots)


def deployment_for(manifest: Path) -> str:
    """Projects with lip-sync go to the GPU pool's deployment, the others to the CPU pool's."""

    data = yaml.safe_load(Path(manifest).read_text(encoding="utf-8")) or {}
    lipsync = data.get("lipsync") if isinstance(data, dict) else None
    return DUB_GPU if isinstance(lipsync, dict) and lipsync.get("enabled") else DUB_CPU


def parameters_for(manifest: str | Path, languages: list[str] | None, out_dir: str | Path | None) -> dict[str, Any]:
    parameters: dict[str, Any] = {"manifest": location(manifest)}
    if languages:
        parameters["languages"] = languages
    if out_dir is not None:
        parameters["out_dir"] = location(out_dir)
    return parameters
