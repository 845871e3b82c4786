"""The run report (`OUT/report.json` and the UI's summary artifacts), with stage times read from Prefect's own
task runs rather than measured on the side."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.runtime import flow_run

from dubforge.core.contracts import Stems, Transcript
from dubforge.core.plan import Plan
from dubforge.core.progress import SHARED

SHARED_STAGES = ("portrait", "ingest", "separate", "transcribe", "align", "track-face", "master")
LANE_STAGES = ("translate", "voice", "mix", "lipsync", "deliver")


def stage_names(lipsync: bool, portrait: bool, languages: Iterable[str]) -> dict[str, tuple[str, str]]:
    """task run name -> (lane, stage) for every stage this run may have (`task_run_name`s of flows/dub.py)."""
    names = {stage: (SHARED, stage) for stage in SHARED_STAGES
             if (stage != "track-face" or lipsync) and (stage != "portrait" or portrait)}
    for language in languages:
        names.update({f"{stage}-{language}": (language, stage) for stage in LANE_STAGES if stage != "lipsync" or lipsync})
    return names


def stage_seconds(names: dict[str, tuple[str, str]], patience_s: float = 2.0) -> dict[tuple[str, str], float]:
    """(lane, stage) -> run time of this flow run's task runs, as Prefect recorded them. The server records task
    states from events, a moment after they happen: wait up to `patience_s` for every run to be final."""
    run_id = flow_run.get_id()
    if run_id is None:
        return {}
    deadline = time.monotonic() + patience_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            if all(r.state is not None and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return {names[r.name]: r.total_run_time.total_seconds() for r in runs if r.name in names}


def _stage_report(lane: str, states: dict[tuple[str, str], str], seconds: dict[tuple[str, str], float],
                  waited: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Per stage: its state, its own run time, and apart from it any wait for a concurrency slot (the gpu limit)."""
    return {
        stage: {"state": state, "seconds": round(seconds.get((lane, stage), 0.0), 3),
                **({"waited_for_slot": round(waited[(lane, stage)], 1)} if waited.get((lane, stage)) else {})}
        for (l, stage), state in states.items()
        if l == lane
    }


def build_report(plan: Plan, stems: Stems, transcript: Transcript, results: dict[str, dict[str, Any]],
                 master: dict[str, Any], states: dict[tuple[str, str], str], seconds: dict[tuple[str, str], float],
                 total_seconds: float, waited: dict[tuple[str, str], float] | None = None) -> dict[str, Any]:
    waited = waited or {}
    return {
        "project": plan.manifest.project,
        "manifest": str(plan.manifest.path),
        "source": {"video": str(plan.video), "duration": plan.media.duration, "language": transcript.language,
                   "language_probability": transcript.language_probability,
                   "segments": len(transcript.segments), "transcript_backend": transcript.backend},
        "separation": stems.backend,
        "mix_mode": plan.mix_mode,
        "warnings": list(plan.warnings) + [f"{lang}: {r['warning']}" for lang, r in results.items() if r.get("warning")],
        "stages": _stage_report(SHARED, states, seconds, waited),
        "languages": {lang: {**r, "stages": r.get("stages") if r.get("previous_run") else _stage_report(lang, states, seconds, waited)}
                      for lang, r in results.items()},
        "master": master,
        "all_cached": all(state == "Cached" for state in states.values()),
        "total_seconds": round(total_seconds, 3),
    }
