"""Run the flow from the CLI: pick the Prefect API, show a live view per language, return the report."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import State
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from dubforge.core import progress
from dubforge.core.errors import RunError
from dubforge.core.plan import Plan
from dubforge.flows.dub import RUN_STARTED, dub_project
from dubforge.flows.report import LANE_STAGES, SHARED_STAGES
from dubforge.flows.storage import location
from dubforge.service.local_server import ensure_local_server, ui_url
from dubforge.service.submit import ui_url_for

STYLE = {"running": "yellow", "done": "green", "cached": "cyan", "failed": "red", "skipped": "magenta", "waiting": "magenta"}


class LiveView:
    """Keeps the latest status per (lane, stage) and renders it as a table."""

    def __init__(self, languages: list[str]):
        self.languages = languages
        self.cells: dict[tuple[str, str], progress.Event] = {}
        self.lock = threading.Lock()

    def __call__(self, event: progress.Event) -> None:
        with self.lock:
            self.cells[(event.lane, event.stage)] = event

    def _cell(self, lane: str, stage: str) -> str:
        event = self.cells.get((lane, stage))
        if event is None:
            return "[dim]·[/]"
        label = event.status
        if event.status == "running" and event.fraction is not None:
            label = f"{event.fraction:.0%}"
        elif event.status == "waiting":
            label = event.detail  # "waiting for a render slot (held by run X)"
        return f"[{STYLE.get(event.status, 'white')}]{label}[/]"

    def __rich__(self) -> Table:
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("lane")
        with self.lock:
            table.add_column(" / ".join(SHARED_STAGES))
            table.add_row("shared", "  ".join(self._cell(progress.SHARED, s) for s in SHARED_STAGES))
        lanes = Table(show_edge=False, pad_edge=False)
        lanes.add_column("language")
        for stage in LANE_STAGES:
            lanes.add_column(stage)
        with self.lock:
            for lang in self.languages:
                lanes.add_row(lang, *(self._cell(lang, s) for s in LANE_STAGES))
        outer = Table.grid()
        outer.add_row(table)
        outer.add_row(lanes)
        return outer


class _NoFailureDetail(logging.Filter):
    """On the terminal the CLI reports failures itself, one line per run or language; Prefect's own error records
    and tracebacks still reach the API and the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and record.exc_info is None


def failure_line(error: BaseException | Any) -> str:
    """One line for a failed run: a RunError's own message; otherwise the exception's type and last line."""
    text = str(error).strip()
    if isinstance(error, RunError):
        return " ".join(text.split())
    last = text.splitlines()[-1] if text else ""
    return f"{type(error).__name__}: {last}" if last else type(error).__name__


STOP_GRACE_S = 1.5  # after the first Ctrl-C, stages get this long to reach their next frame/line


def _exit_now(code: int) -> None:
    """Leave without joining worker threads or flushing Prefect's event queue (that is what hung for 90 s).
    Safe: every output is written to a temporary name and renamed, and the next run sweeps the temporaries."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


@contextlib.contextmanager
def _interruptible(console: Console) -> Iterator[None]:
    """Ctrl-C once: running stages stop at their next progress point and the process exits within 2 s; twice: at once.

    The signal handler only sets flags (it may interrupt the main thread anywhere, even inside a lock); a watchdog
    thread started beforehand says so and ends the process after the grace period."""
    interrupted = threading.Event()
    said = threading.Lock()

    def say() -> None:
        if said.acquire(blocking=False):
            # straight to the file descriptor: the interrupt may have landed while this thread held the stream's
            # lock (a console write in progress), and printing through it would then wait forever
            with contextlib.suppress(OSError, ValueError):
                os.write(console.file.fileno(), b"Interrupted: stopping (Ctrl-C again to quit at once); finished "
                         b"stages are kept for the next run\n")

    def stop() -> None:
        say()
        _exit_now(130)

    def watchdog() -> None:
        interrupted.wait()
        time.sleep(STOP_GRACE_S)
        stop()

    def on_interrupt(_signum, _frame) -> None:
        if interrupted.is_set():
            os._exit(130)
        progress.cancel()
        interrupted.set()
        say()  # now: whatever catches the KeyboardInterrupt (Prefect's engine may), the user has been told
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    threading.Thread(target=watchdog, name="ctrl-c-watchdog", daemon=True).start()
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        stop()
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.reset()


_NO_FAILURE_DETAIL = _NoFailureDetail()


LOG_LEVELS = {"quiet": logging.ERROR, "normal": logging.WARNING, "verbose": logging.INFO}


@contextlib.contextmanager
def prefect_logs_through(console: Console, level: int) -> Iterator[None]:
    """Prefect's console log lines printed by `console`: while a rich Live view is on that console, they appear
    above it instead of tearing it. Only lines at `level` or above reach the terminal; all go to the API/UI."""
    handlers = {h for logger in [logging.root, *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                                 if n.startswith("prefect"))]
                for h in getattr(logger, "handlers", []) if isinstance(h, PrefectConsoleHandler)}
    saved = [(h, h.console, h.level) for h in handlers]
    for handler in handlers:
        handler.console = console
        handler.setLevel(level)
        handler.addFilter(_NO_FAILURE_DETAIL)
    try:
        yield
    finally:
        for handler, own_console, own_level in saved:
            handler.console = own_console
            handler.setLevel(own_level)
            handler.removeFilter(_NO_FAILURE_DETAIL)


def run_with_display(plan: Plan, manifest: str | Path, languages: list[str] | None, out: str | Path | None,
                     ephemeral: bool, console: Console, verbosity: str = "normal") -> dict[str, Any] | None:
    """Run the flow with a live table per language (in a terminal, unless quiet); print the run's UI URL when it
    starts and when it ends. `verbosity`: quiet (errors only) | normal | verbose (Prefect's INFO logs too)."""

    settings: dict = {}
    api = PREFECT_API_URL.value()
    if not api and not ephemeral:
        try:
            with console.status("Starting the local Prefect server (first run only)..."):
                api = ensure_local_server()
        except RuntimeError as exc:
            console.print(f"[red]The run failed:[/] {escape(failure_line(exc))}", highlight=False, soft_wrap=True)
            return None
        settings[PREFECT_API_URL] = api
    quiet = verbosity == "quiet"
    if api and not quiet:
        console.print(f"Prefect UI: {ui_url(api)}  (flow 'dub-project')")

    for warning in plan.warnings:
        console.print(f"[yellow]⚠[/] {escape(warning)}", highlight=False, soft_wrap=True)
    view = LiveView([lp.language for lp in plan.languages])
    interactive = console.is_terminal and not quiet
    run_url: list[str] = []

    def listener(event: progress.Event) -> None:
        if event.stage == RUN_STARTED:
            if api:
                run_url.append(ui_url_for(event.detail))
                if not quiet:
                    console.print(f"Run: {run_url[-1]}", highlight=False)
        elif interactive:
            view(event)
        elif not quiet and event.status != "running":
            console.print(f"{event.lane:>8} {event.stage:<10} {event.status}{' ' + event.detail if event.detail else ''}",
                          highlight=False)

    unsubscribe = progress.subscribe(listener)
    try:
        with temporary_settings(updates=settings), prefect_logs_through(console, LOG_LEVELS[verbosity]):
            display = Live(view, console=console, refresh_per_second=4) if interactive else contextlib.nullcontext()
            with _interruptible(console), display:  # Live restores the terminal before an interrupted exit
                state = cast(State, dub_project(manifest=location(manifest), languages=languages,
                                                out_dir=location(out) if out else None, return_state=True))
    finally:
        unsubscribe()
    if run_url and not quiet:
        console.print(f"Run: {run_url[-1]}", highlight=False)
    result = state.result(raise_on_failure=False)
    if isinstance(result, dict) and "languages" in result:
        return result  # a run with a failed language ends Failed; its state still carries the report
    console.print(f"[red]The run failed:[/] {escape(failure_line(result))}", highlight=False, soft_wrap=True)
    return None
