"""Load: projects at once on two workers, a 6-language project, two runs on one OUT, the GPU limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dubforge.service.submit import submit

from .conftest import assert_deliverables_whole, explain, project, task_runs, wait

pytestmark = pytest.mark.service


def _overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def _window(flow_run_id: str) -> tuple[float, float]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return run.start_time.timestamp(), run.end_time.timestamp()


def test_two_projects_and_six_languages_on_two_workers(service):
    six = ["es", "de", "fr", "pt-BR", "it", "nl"]
    manifests = {"pair-a": ["es", "pt-BR"], "pair-b": ["de", "fr"], "six": six}
    runs = {name: submit(project(service.demo, name, langs)) for name, langs in manifests.items()}
    finals = {name: wait(run_id, timeout=300) for name, run_id in runs.items()}
    for name, final in finals.items():
        assert final.completed and set(final.languages.values()) == {"completed"}, explain(service, final)
        assert sorted(final.languages) == sorted(manifests[name])
    windows = [_window(run_id) for run_id in runs.values()]
    assert _overlap(windows) == 2  # both workers busy at once, never more (one run per worker)
    for name, langs in manifests.items():
        out = service.demo / f"out-{name}"
        report = json.loads((out / "report.json").read_text())
        assert report["project"] == name
        assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(langs)
        assert_deliverables_whole(out)


def test_same_output_folder_twice_at_once_one_waits_out(service):
    manifest = project(service.demo, "twice", ["es"])
    first, second = submit(manifest), submit(manifest)
    finals = [wait(first), wait(second)]
    states = sorted(f.state for f in finals)
    assert states == ["Completed", "Failed"], finals
    failed = next(f for f in finals if f.state == "Failed")
    assert "another dubforge run is writing to" in failed.message
    assert_deliverables_whole(service.demo / "out-twice")


def test_gpu_limit_holds_across_workers(service):
    from prefect import Flow

    from dubforge.flows.deployments import CPU_POOL

    Flow.from_source(source=str(Path(__file__).parent / "probe"), entrypoint="gpu_probe.py:gpu_probe").deploy(
        name="probe", work_pool_name=CPU_POOL, print_next_steps=False, build=False, push=False)
    runs = [_run_probe() for _ in range(2)]
    for run_id in runs:
        assert (final := wait(run_id)).completed, explain(service, final)
    renders = [t for run_id in runs for t in task_runs(run_id) if t.name.startswith("render-")]
    assert len(renders) == 6 and all(t.state.is_completed() for t in renders)
    assert _overlap([(t.start_time.timestamp(), t.end_time.timestamp()) for t in renders]) == 1
    assert _overlap([_window(run_id) for run_id in runs]) == 2  # the two flow runs did run at the same time


def _run_probe() -> str:
    from prefect.deployments import run_deployment

    return str(run_deployment("gpu-probe/probe", parameters={"renders": 3, "seconds": 1.0}, timeout=0,
                              as_subflow=False).id)
