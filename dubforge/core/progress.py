"""In-process progress events from the flow to whoever listens (the CLI's live display).

Prefect's UI gets the same information from task states and progress artifacts; this bus only
serves the terminal, so it is best-effort and never raises into the pipeline.
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


def subscribe(listener: Callable[[Event], None]) -> Callable[[], None]:
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(lane: str, stage: str, status: str, fraction: float | None = None, detail: str = "") -> None:
    event = Event(lane, stage, status, fraction, detail)
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a broken display must not break a dub
            pass
