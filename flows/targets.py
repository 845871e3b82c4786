"""Names of the `dub-project` deployments and the parameters of a flow run of them (shared by submit and the inbox)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dubforge.flows.storage import location

DUB_FLOW = "dub-project"
DUB_CPU = f"{DUB_FLOW}/cpu"
DUB_GPU = f"{DUB_FLOW}/gpu"


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
