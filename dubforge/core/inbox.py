"""The manifests inbox: which manifests are new or changed, and the record of what was submitted.

A manifest is submitted once per content (sha256 of the file). Each manifest has a record in
`INBOX/.dubforge-inbox/<file name>.json`: the current hash, the flow run it became (or why it was not
submitted) and the history of earlier submissions. A manifest may carry its own schedule
(`schedule: {cron: "0 2 * * *", timezone: "UTC"}`); the scanner turns it into a schedule of the
dub-project deployment (slug `inbox-<file name>`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from dubforge.core.files import sha256_file, write_json_atomic

RECORDS = ".dubforge-inbox"
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Candidate:
    manifest: Path
    sha256: str
    record: dict[str, Any] | None  # None: never seen

    @property
    def changed(self) -> bool:
        return self.record is None or self.record.get("sha256") != self.sha256


def manifests(inbox: Path) -> list[Path]:
    """The manifests in the inbox folder itself (not hidden, not in sub-folders), sorted by name."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise FileNotFoundError(f"inbox folder {inbox} does not exist")
    return sorted(p for p in inbox.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))


def record_path(inbox: Path, manifest: Path) -> Path:
    return Path(inbox) / RECORDS / f"{Path(manifest).name}.json"


def read_record(inbox: Path, manifest: Path) -> dict[str, Any] | None:
    path = record_path(inbox, manifest)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def candidates(inbox: Path) -> list[Candidate]:
    return [Candidate(m, sha256_file(m), read_record(inbox, m)) for m in manifests(inbox)]


def record(inbox: Path, candidate: Candidate, outcome: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest's record: `outcome` (flow_run_id + deployment, or problems) for the current hash."""
    previous = candidate.record or {}
    history = list(previous.get("history", []))
    if previous.get("sha256"):
        history.append({k: previous[k] for k in ("sha256", "at", "flow_run_id", "deployment", "problems") if k in previous})
    entry = {"manifest": str(candidate.manifest), "sha256": candidate.sha256,
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **outcome, "history": history}
    write_json_atomic(record_path(inbox, candidate.manifest), entry)
    return entry


def manifest_schedule(manifest: Path) -> dict[str, str] | None:
    """The manifest's own `schedule:` as {cron, timezone}, or None. A bare string is a cron expression."""

    data = yaml.safe_load(Path(manifest).read_text(encoding="utf-8"))
    value = data.get("schedule") if isinstance(data, dict) else None
    if value is None:
        return None
    if isinstance(value, str):
        value = {"cron": value}
    if not isinstance(value, dict) or not isinstance(value.get("cron"), str):
        raise ValueError(f"{manifest}: schedule must be a cron string or {{cron: '...', timezone: '...'}}")
    return {"cron": value["cron"], "timezone": str(value.get("timezone", "UTC"))}


def schedule_slug(manifest: Path) -> str:
    return f"inbox-{Path(manifest).name}"
