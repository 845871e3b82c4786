"""Which Prefect API a CLI run talks to.

`PREFECT_API_URL` set: that server (a team's). Otherwise a local server on 127.0.0.1:4200 is started
once in the background and reused by later runs, so the UI stays up to watch runs and their
history; `--ephemeral` uses Prefect's throw-away server instead (nothing left running).

A busy server (a large SQLite database) can take seconds to answer: a server that is there but slow is
waited for, never mistaken for an absent one, and a second server is never started on a taken port. The
server dubforge starts records its PID in `PREFECT_HOME/dubforge-server.pid` and keeps its database small
with Prefect's own retention (old flow runs and events are vacuumed).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 4200
PID_FILE = "dubforge-server.pid"
PATIENCE_S = 60.0  # how long a server that holds the port (or that dubforge started) may take to answer
SLOW_HEALTH_S = 15.0  # one health request to a busy server
# Prefect's database vacuum: flow runs (with their logs and artifacts) older than 14 days, events after 3 days.
# ISO 8601 durations: Prefect's events setting rejects a bare number of seconds.
RETENTION = {
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": "P14D",
    "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P3D",
}


def local_api() -> str:
    return f"http://{LOCAL_HOST}:{LOCAL_PORT}/api"


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    """The Prefect API at `api_url` answers its health check within `timeout` seconds."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def started_server_pid() -> int | None:
    """The PID of the local server dubforge started, if it is still running (a stale pid file is removed)."""
    path = prefect_home() / PID_FILE
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if _alive(pid):
        return pid
    path.unlink(missing_ok=True)
    return None


def _wait_until_healthy(api: str, patience: float, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if healthy(api, timeout=min(SLOW_HEALTH_S, max(deadline - time.monotonic(), 0.5))):
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.25)
    return False


def _database_note() -> str:
    database = prefect_home() / "prefect.db"
    if not database.is_file():
        return ""
    return f"; its database {database} is {database.stat().st_size / 1e6:.0f} MB"


def ensure_local_server(timeout: float = 90.0, patience: float = PATIENCE_S) -> str:
    """Start (or reuse) the local Prefect server; return its API URL. Raises RuntimeError saying what to do if it
    cannot: a server that holds the port but does not answer is waited for `patience` s, never doubled."""
    api = local_api()
    if healthy(api):
        return api
    pid = started_server_pid()
    if pid is not None or _port_taken(LOCAL_HOST, LOCAL_PORT):  # slow or starting, not absent
        if _wait_until_healthy(api, patience):
            return api
        who = f"the server dubforge started (PID {pid})" if pid is not None else f"a process on {LOCAL_HOST}:{LOCAL_PORT}"
        stop = f"stop it (kill {pid})" if pid is not None else f"stop the process listening on port {LOCAL_PORT}"
        raise RuntimeError(f"{who} did not answer {api}/health within {patience:.0f} s{_database_note()}; wait and "
                           f"run again, run with --ephemeral, or {stop}")
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "dubforge-server.log"
    prefect_cli = Path(sys.executable).with_name("prefect")
    command = [str(prefect_cli), "server", "start", "--host", LOCAL_HOST, "--port", str(LOCAL_PORT)]
    env = {**RETENTION, **os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    (home / PID_FILE).write_text(f"{process.pid} {LOCAL_PORT}\n")
    if _wait_until_healthy(api, timeout, process):
        return api
    if process.poll() is not None:
        (home / PID_FILE).unlink(missing_ok=True)
        raise RuntimeError(f"the local Prefect server exited (code {process.returncode}); see {log_path}")
    raise RuntimeError(f"the local Prefect server (PID {process.pid}) did not become healthy in {timeout:.0f} s; see "
                       f"{log_path}; run again to keep waiting, or use --ephemeral")


def ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


def prune_flow_runs(older_than: dt.timedelta, flow_name: str | None = None, page: int = 200) -> int:
    """Delete finished flow runs (with their task runs, logs and artifacts) that ended more than `older_than` ago
    from the server in PREFECT_API_URL; `flow_name` limits it to one flow. Returns how many were deleted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    cutoff = dt.datetime.now(dt.timezone.utc) - older_than
    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
    runs_filter = FlowRunFilter(end_time=FlowRunFilterEndTime(before_=cutoff),
                                state={"type": FlowRunFilterStateType(any_=finished)})
    flows_filter = FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None
    deleted = 0
    with get_client(sync_client=True) as client:
        while runs := client.read_flow_runs(flow_filter=flows_filter, flow_run_filter=runs_filter, limit=page):
            for run in runs:
                client.delete_flow_run(run.id)
                deleted += 1
    return deleted
