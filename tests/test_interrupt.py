"""Ctrl-C during a lip-sync render: one stops the run within 2 s, a second exits at once; nothing is left under a
final name and the next run resumes from what had finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dubforge.demo.project import make_demo

GRACE_S = 2.0


def start_run(manifest: Path, log: Path) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dubforge", "run", str(manifest)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)


def wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def final_files(out: Path) -> list[Path]:
    """Deliverables under their final names (not the cache, the journal or the temporaries)."""
    return [p for p in out.rglob("*") if p.is_file() and ".dubforge" not in p.relative_to(out).parts
            and not p.name.startswith(".")]


@pytest.fixture
def started():
    """Runs a test starts are killed when it ends, whatever happened."""
    processes: list[subprocess.Popen] = []
    yield lambda p: processes.append(p) or p
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_api) -> Path:
    return make_demo(tmp_path_factory.mktemp("interrupt"), seconds=8, languages=["es"], lipsync=True)


def test_one_ctrl_c_stops_within_2_s_and_the_next_run_resumes(project, tmp_path, started):
    log = tmp_path / "first.log"
    process = started(start_run(project, log))
    wait_for(log, "voice      done", process)  # the render starts next
    time.sleep(0.7)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    process.wait(timeout=30)
    stopped = time.monotonic() - sent
    output = log.read_text()
    assert stopped <= GRACE_S, (stopped, output)
    assert process.returncode == 130, output
    assert "Interrupted" in output and "Traceback" not in output and "Error emitting" not in output, output
    assert "lipsync    done" not in output, output  # stopped mid-render
    out = project.parent / "out"
    assert final_files(out) == [], final_files(out)

    again = subprocess.run([sys.executable, "-m", "dubforge", "run", str(project)], capture_output=True, text=True,
                           env={**os.environ, "PREFECT_API_URL": _api()})
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["track-face"]["state"] == "Cached"  # finished work reused
    assert report["languages"]["es"]["stages"]["voice"]["state"] == "Cached"
    assert not [p for p in out.rglob(".*.part*")]  # the interrupted render's temporary was swept


def test_second_ctrl_c_exits_at_once(project, tmp_path, started):
    (project.parent / "out" / "es" / "qc.json").unlink()  # deliver again: a stage that runs a while
    log = tmp_path / "second.log"
    process = started(start_run(project, log))
    wait_for(log, "Prefect UI", process)
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    process.wait(timeout=30)
    assert time.monotonic() - sent <= 0.5, log.read_text()
    assert process.returncode == 130 and "Traceback" not in log.read_text(), log.read_text()


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()
