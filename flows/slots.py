"""Waiting on a tag concurrency slot (the server-wide `gpu` limit of lip-sync renders): say who holds it, and
report the wait apart from the stage's own time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import httpx
import prefect.task_engine
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture

from dubforge.core import progress

POLL_S = 1.0
LABEL_TAGS = ("project:", "lang:")  # dubforge's tags for filtering in the UI: never given a concurrency limit


@contextmanager
def slots_for_limits_only() -> Iterator[None]:
    """Prefect's task engine (3.8.8, pinned) asks the server for a slot of every tag of a task before it runs, one
    HTTP round trip per task through one queue per tag set, even for tags no limit exists for. The `project:` and
    `lang:` tags on every task made that a third of an unchanged re-run's wall time. Within this context the engine
    asks only for the other tags (`gpu`, and any tag a team limits itself)."""
    asked = prefect.task_engine._concurrency

    def limited_tags_only(names: list[str], *args, **kwargs):
        return asked([n for n in names if not n.removeprefix("tag:").startswith(LABEL_TAGS)], *args, **kwargs)

    prefect.task_engine._concurrency = limited_tags_only  # type: ignore[assignment]
    try:
        yield
    finally:
        prefect.task_engine._concurrency = asked  # type: ignore[assignment]


def slot_holders(tag: str, own: UUID) -> list[str]:
    """Names of the flow runs holding every slot of `tag`'s limit, or [] if a slot is free (or `own` holds one)."""
    with get_client(sync_client=True) as client:
        limit = client.read_concurrency_limit_by_tag(tag)
        if own in limit.active_slots or len(limit.active_slots) < limit.concurrency_limit:
            return []
        names = []
        for task_run_id in limit.active_slots:
            task_run = client.read_task_run(task_run_id)
            flow_run = client.read_flow_run(task_run.flow_run_id) if task_run.flow_run_id else None
            names.append(flow_run.name if flow_run else str(task_run_id))
        return sorted(set(names))


class SlotWait:
    """Watch a submitted task while it waits for a slot of `tag` (after `after`, its inputs, are done): emit a
    "waiting" progress event naming the holders, and measure the wait (`waited`, seconds)."""

    def __init__(self, tag: str, lane: str, stage: str, future: PrefectFuture, after: list[PrefectFuture]):
        self.tag, self.lane, self.stage, self.future, self.after = tag, lane, stage, future, after
        self.waited = 0.0
        self._thread = threading.Thread(target=self._watch, name=f"slot-{lane}-{stage}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        for upstream in self.after:
            upstream.wait()
        started, shown = None, None
        while not progress.cancelled():
            state = self.future.state
            if state.is_final() or state.is_running():
                break
            try:
                holders = slot_holders(self.tag, self.future.task_run_id)
            except (ObjectNotFound, httpx.HTTPError):  # no limit, or the API is busy: nothing to say this time
                holders = []
            if holders:
                started = started if started is not None else time.monotonic()
                if holders != shown:
                    progress.emit(self.lane, self.stage, "waiting",
                                  detail=f"waiting for a render slot (held by run {', '.join(holders)})")
                    shown = holders
            time.sleep(POLL_S)
        if started is not None:
            self.waited = time.monotonic() - started

    def result(self) -> float:
        """Seconds spent waiting for the slot (call when the task is done)."""
        self._thread.join(timeout=POLL_S * 5)
        return self.waited
