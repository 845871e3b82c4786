"""A lip-sync render waiting for the server-wide `gpu` slot says who holds it, and the wait is reported apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

from typer.testing import CliRunner

from dubforge.cli import app
from tests.test_delivery_runs import scripted_project

HOLD_S = 12.0
HOLDER = """
import sys, time
from pathlib import Path
from prefect import flow, task

@task(tags=["gpu"])
def render_elsewhere():
    Path(sys.argv[1]).write_text("holding")
    time.sleep(float(sys.argv[2]))

@flow(flow_run_name="other-project-render")
def other_project():
    render_elsewhere()

other_project()
"""


def test_waiting_for_the_gpu_slot_is_shown_and_reported(tmp_path, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as client:  # the server-wide limit: one render at a time
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
    path = scripted_project(tmp_path, seconds=4.0, rights={"consent": True}, lipsync={"enabled": True})
    ready = tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ready), str(HOLD_S)],
                              env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        held_since = time.monotonic()
        result = CliRunner().invoke(app, ["run", str(path)])
    finally:
        holder.wait(timeout=60)
    assert result.exit_code == 0, result.output
    assert "waiting for a render slot (held by run other-project-render)" in " ".join(result.output.split())
    stage = json.loads((tmp_path / "out" / "report.json").read_text())["languages"]["es"]["stages"]["lipsync"]
    assert stage["waited_for_slot"] >= 2.0, stage
    # the render alone, and the wait and the render both within the run's wall time (an upper bound on the wait
    # without guessing how soon Prefect's slot polling notices the release: 5 to 9 s late here)
    assert stage["seconds"] < time.monotonic() - held_since - stage["waited_for_slot"], stage


def test_a_task_asks_for_slots_of_limited_tags_only(prefect_api, monkeypatch):
    """The engine's slot request goes through the hook with the tags that may carry a limit; `project:` and `lang:`
    (UI labels) stay on the task run. Fails if Prefect stops calling `prefect.task_engine._concurrency`."""
    import prefect.task_engine
    from prefect import flow, tags, task
    from prefect.client.orchestration import get_client

    from dubforge.flows.slots import slots_for_limits_only

    asked: list[list[str]] = []

    @contextmanager
    def recorder(names, *args, **kwargs):
        asked.append(list(names))
        yield

    @task(tags=["gpu"])
    def render() -> str:
        from prefect.runtime import task_run
        return task_run.id

    @flow
    def project() -> str:
        with tags("project:demo", "lang:es"):
            return render()

    monkeypatch.setattr(prefect.task_engine, "_concurrency", recorder)
    with slots_for_limits_only():
        task_run_id = project()
    assert prefect.task_engine._concurrency is recorder  # put back
    assert asked == [["tag:gpu"]]
    with get_client(sync_client=True) as client:
        assert {"gpu", "project:demo", "lang:es"} <= set(client.read_task_run(task_run_id).tags)
