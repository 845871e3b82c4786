"""Run the flow from the CLI: pick the Prefect API, show a live view per language, return the report."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dubforge.core import progress
from dubforge.core.plan import Plan
from dubforge.flows.dub import RUN_STARTED, dub_project
from dubforge.flows.storage import location
from dubforge.service.local_server import ensure_local_server, ui_url
from dubforge.service.submit import ui_url_for

SHARED_STAGES = ("portrait", "ingest", "separate", "transcribe", "align", "track-face", "master")
LANE_STAGES = ("translate", "voice", "mix", "lipsync", "deliver")
STYLE = {"running": "yellow", "done": "green", "cached": "cyan", "failed": "red"}


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
    try:
        yield
    finally:
        for handler, own_console, own_level in saved:
            handler.console = own_console
            handler.setLevel(own_level)


def run_with_display(plan: Plan, manifest: str | Path, languages: list[str] | None, out: str | Path | None,
                     ephemeral: bool, console: Console, verbosity: str = "normal") -> dict[str, Any] | None:
    """Run the flow with a live table per language (in a terminal, unless quiet); print the run's UI URL when it
    starts and when it ends. `verbosity`: quiet (errors only) | normal | verbose (Prefect's INFO logs too)."""

    settings: dict = {}
    api = PREFECT_API_URL.value()
    if not api and not ephemeral:
        with console.status("Starting the local Prefect server (first run only)..."):
            api = ensure_local_server()
        settings[PREFECT_API_URL] = api
    quiet = verbosity == "quiet"
    if api and not quiet:
        console.print(f"Prefect UI: {ui_url(api)}  (flow 'dub-project')")

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
            with display:
                state = dub_project(manifest=location(manifest), languages=languages,
                                    out_dir=location(out) if out else None, return_state=True)
    finally:
        unsubscribe()
    if run_url and not quiet:
        console.print(f"Run: {run_url[-1]}", highlight=False)
    result = state.result(raise_on_failure=False)
    if isinstance(result, dict) and "languages" in result:
        return result  # a run with a failed language ends Failed; its state still carries the report
    console.print(f"[red]The run failed:[/] {result}", highlight=False)
    return None
