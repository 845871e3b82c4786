"""Faults: a worker SIGKILLed mid-run, the database restarting during a run, a full output disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import assert_deliverables_whole, project, task_runs, wait

pytestmark = pytest.mark.service


def _processes() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _descendants(pid: int, parents: dict[int, int]) -> list[int]:
    children = [p for p, parent in parents.items() if parent == pid]
    return children + [d for child in children for d in _descendants(child, parents)]


def _kill_worker_running(service, flow_run_id: str) -> str:
    """SIGKILL the worker whose child runs `flow_run_id`, with its whole process tree (a machine going away)."""
    parents = _processes()
    for name, worker in service.stack.workers.items():
        tree = _descendants(worker.pid, parents)
        for pid in tree:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
                for victim in [worker.pid, *tree]:
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                worker.wait()
                del service.stack.workers[name]
                return name
    raise AssertionError(f"no worker process runs flow run {flow_run_id}")


def _delivered(flow_run_id: str) -> set[str]:
    """Languages whose deliver task the API shows Completed (its cache record is written before that state)."""
    return {t.name.removeprefix("deliver-") for t in task_runs(flow_run_id)
            if t.name.startswith("deliver-") and t.state and t.state.is_completed()}


def test_worker_killed_mid_run_then_resubmitted(service):
    languages = ["es", "de", "fr", "pt-BR"]
    manifest = project(service.demo, "kill", languages)
    out = service.demo / "out-kill"
    run_id = service.submit(manifest)
    deadline = time.monotonic() + 120
    while not _delivered(run_id):
        assert time.monotonic() < deadline, "no language was delivered in 120 s"
        time.sleep(0.1)
    killed = _kill_worker_running(service, run_id)
    killed_at = time.monotonic()
    finished = _delivered(run_id)
    assert not (out / "report.json").exists(), "the run ended before the kill: nothing was interrupted"
    assert finished != set(languages)
    service.stack.add_worker("dubforge-cpu", f"{killed}-replacement")

    assert_deliverables_whole(out)  # what the killed run left behind is whole (or absent)
    second = service.submit(manifest)
    assert wait(second).completed
    report = json.loads((out / "report.json").read_text())
    assert {lang: r["status"] for lang, r in report["languages"].items()} == dict.fromkeys(languages, "completed")
    for lang in finished:  # finished before the kill: nothing recomputed
        assert {s["state"] for s in report["languages"][lang]["stages"].values()} == {"Cached"}, report["languages"][lang]
    for stage in ("ingest", "separate", "transcribe", "align"):
        assert report["stages"][stage]["state"] == "Cached"
    assert any(s["state"] == "Completed" for lang in set(languages) - finished
               for s in report["languages"][lang]["stages"].values())
    assert_deliverables_whole(out)

    # the killed run does not stay Running: the zombie automation (90 s without heartbeat) crashes it
    from dubforge.service.submit import status

    while (killed_state := status(run_id)).state == "Running":
        assert time.monotonic() - killed_at < 200, "the killed run is still Running"
        time.sleep(1)
    assert killed_state.state == "Crashed" and "heartbeat" in killed_state.message, killed_state


def test_database_restart_during_run(service):
    manifest = project(service.demo, "dbrestart", ["es", "pt-BR"])
    run_id = service.submit(manifest)
    follower = subprocess.Popen([sys.executable, "-m", "dubforge", "status", run_id, "--wait"], env=service.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = service.demo / "out-dbrestart"
    deadline = time.monotonic() + 120
    while not (out / ".dubforge" / "work").exists():  # the flow is running its first stages
        assert time.monotonic() < deadline
        time.sleep(0.05)
    service.stack.postgres.restart()
    final = wait(run_id)
    assert final.completed, final
    assert final.languages == {"es": "completed", "pt-BR": "completed"}
    text, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0, text
    assert_deliverables_whole(out)


def test_full_output_disk_fails_clearly_and_corrupts_nothing(service):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = service.root / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=19m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        manifest = project(service.demo, "fulldisk", ["es", "de", "pt-BR"])
        out = disk / "out"
        run_id = service.submit(manifest, "--out", str(out))
        result = service.cli("status", run_id, "--wait", check=False)
        assert result.returncode == 1, result.stdout
        assert "No space left on device" in result.stdout, result.stdout
        assert_deliverables_whole(out)
        leftovers = [p for p in out.rglob(".*.part*")]
        assert not leftovers, leftovers

        subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
        again = service.submit(manifest, "--out", str(out))
        assert wait(again).completed
        assert json.loads((out / "report.json").read_text())["languages"]["de"]["status"] == "completed"
        assert_deliverables_whole(out)
    finally:
        subprocess.run(["umount", "-l", str(disk)])
