"""Which Prefect API a CLI run talks to.

`PREFECT_API_URL` set: that server (a team's). Otherwise a local server on 127.0.0.1:4200 is started
once in the background and reused by later runs, so the UI stays up to watch runs and their
history; `--ephemeral` uses Prefect's throw-away server instead (nothing left running).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 4200
LOCAL_API = f"http://{LOCAL_HOST}:{LOCAL_PORT}/api"


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    """The Prefect API at `api_url` answers its health check within `timeout` seconds."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))


def ensure_local_server(timeout: float = 90.0) -> str:
    """Start (or reuse) the local Prefect server; return its API URL. Raises RuntimeError if it cannot start."""
    if healthy(LOCAL_API):
        return LOCAL_API
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "dubforge-server.log"
    prefect_cli = Path(sys.executable).with_name("prefect")
    command = [str(prefect_cli), "server", "start", "--host", LOCAL_HOST, "--port", str(LOCAL_PORT)]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(LOCAL_API):
            return LOCAL_API
        if process.poll() is not None:
            raise RuntimeError(f"the local Prefect server exited (code {process.returncode}); see {log_path}")
        time.sleep(0.25)
    raise RuntimeError(f"the local Prefect server did not become healthy in {timeout:.0f} s; see {log_path}")


def ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")
