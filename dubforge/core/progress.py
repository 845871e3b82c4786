"""In-process progress events from the flow to whoever listens (the CLI's live display).

Prefect's UI gets the same information from task states and progress artifacts; this bus only
serves the terminal, so a broken listener never raises into the pipeline.

It is also where a run is interrupted: after `cancel()` (the CLI's Ctrl-C), every "running" event (a stage
starting, a frame rendered, a line voiced) raises `Cancelled`, so stages stop at their next step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

SHARED = "shared"

ProgressCallback = Callable[[int, int], None]  # (done, total): how stage functions report progress


@dataclass(frozen=True)
class Event:
    lane: str  # a target language, or SHARED
    stage: str
    status: str  # running | done | cached | failed | skipped
    fraction: float | None = None
    detail: str = ""


_listeners: list[Callable[[Event], None]] = []
_lock = threading.Lock()
_cancelled = threading.Event()


class Cancelled(Exception):
    """The run was interrupted (Ctrl-C); raised at the next progress point of a running stage."""


def cancel() -> None:
    _cancelled.set()


def cancelled() -> bool:
    return _cancelled.is_set()


def reset() -> None:
    _cancelled.clear()


def subscribe(listener: Callable[[Event], None]) -> Callable[[], None]:
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(lane: str, stage: str, status: str, fraction: float | None = None, detail: str = "") -> None:
    if status == "running" and _cancelled.is_set():
        raise Cancelled(f"{lane} {stage}: interrupted")
    event = Event(lane, stage, status, fraction, detail)
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a broken display must not break a dub
            pass
