"""The local Prefect server: slow is not absent, a taken port never gets a second server, and the advice is concrete."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from dubforge.service import local_server


class SlowHealth(BaseHTTPRequestHandler):
    delay = 3.0  # a busy server: /api/health answers after seconds

    def do_GET(self) -> None:
        time.sleep(self.delay)
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> int:
    """An isolated PREFECT_HOME and a free port for the local server; returns the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setattr(local_server, "LOCAL_PORT", port)
    return port


@pytest.fixture
def local(isolated, monkeypatch):
    """`isolated`, and starting a real server is an error."""
    port = isolated
    started = []

    def no_second_server(*args, **kwargs):
        started.append(args)
        raise AssertionError("a second server was started")

    monkeypatch.setattr(local_server, "subprocess", SimpleNamespace(Popen=no_second_server))
    return port, started


def test_a_slow_server_is_waited_for(local):
    port, started = local
    server = ThreadingHTTPServer(("127.0.0.1", port), SlowHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert local_server.ensure_local_server(patience=20.0) == f"http://127.0.0.1:{port}/api"
    finally:
        server.shutdown()
    assert started == []


def test_a_taken_port_that_never_answers_is_refused_with_advice(local):
    port, started = local
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()  # accepts connections, never answers HTTP
    try:
        with pytest.raises(RuntimeError) as error:
            local_server.ensure_local_server(patience=2.0)
    finally:
        listener.close()
    message = str(error.value)
    assert f"a process on 127.0.0.1:{port} did not answer" in message and "--ephemeral" in message
    assert f"stop the process listening on port {port}" in message
    assert started == []


def test_the_server_dubforge_started_is_named_by_pid(local, tmp_path):
    port, started = local
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # still starting, port not open
    try:
        (tmp_path / local_server.PID_FILE).write_text(f"{stand_in.pid} {port}\n")
        (tmp_path / "prefect.db").write_bytes(b"\0" * 3_000_000)
        with pytest.raises(RuntimeError, match=rf"the server dubforge started \(PID {stand_in.pid}\) did not answer .* "
                                               rf"is 3 MB.*--ephemeral, or stop it \(kill {stand_in.pid}\)"):
            local_server.ensure_local_server(patience=1.0)
    finally:
        stand_in.kill()
        stand_in.wait()
    assert local_server.started_server_pid() is None  # a dead server's pid file is stale
    assert not (tmp_path / local_server.PID_FILE).exists() and started == []


def test_a_started_server_gets_retention_and_a_pid_file(local, tmp_path, monkeypatch):
    port, _ = local
    launched = {}

    class Process:
        pid = 424242

        def __init__(self, command, env, **_kwargs):
            launched.update(command=command, env=env)

        def poll(self):
            return None

    monkeypatch.setattr(local_server, "subprocess", SimpleNamespace(Popen=Process, STDOUT=subprocess.STDOUT, DEVNULL=subprocess.DEVNULL))
    monkeypatch.setattr(local_server, "healthy", lambda _api, timeout=1.0: bool(launched))
    assert local_server.ensure_local_server() == f"http://127.0.0.1:{port}/api"
    assert launched["command"][-2:] == ["--port", str(port)]
    assert launched["env"]["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events,flow_runs"
    assert (tmp_path / local_server.PID_FILE).read_text().split() == ["424242", str(port)]
    # The server parses its environment with Prefect's own settings: a value it rejects stops it at start-up.
    for name, value in launched["env"].items():
        if name.startswith("PREFECT_SERVER_"):
            monkeypatch.setenv(name, value)
    from prefect.settings import Settings

    settings = Settings()
    assert settings.server.services.db_vacuum.retention_period == timedelta(days=14)
    assert settings.server.events.retention_period == timedelta(days=3)


def test_prune_deletes_old_finished_runs_only(prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from typer.testing import CliRunner

    from dubforge.cli import app

    @flow(name="prune-me")
    def finished_run() -> int:
        return 1

    for _ in range(3):
        finished_run()
    named = FlowFilter(name=FlowFilterName(any_=["prune-me"]))
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs(flow_filter=named)) == 3
        kept = CliRunner().invoke(app, ["server", "prune", "--flow", "prune-me"])  # 14 days: all are recent
        assert kept.exit_code == 0 and "deleted 0 flow runs older than 14 days" in kept.output, kept.output
        pruned = CliRunner().invoke(app, ["server", "prune", "--flow", "prune-me", "--older-than", "0"])
        assert pruned.exit_code == 0 and "deleted 3 flow runs older than 0 days" in pruned.output, pruned.output
        assert client.read_flow_runs(flow_filter=named) == []


def test_the_real_server_starts_and_answers(isolated):
    """The front door: `dubforge run` with no server starts Prefect's own, with dubforge's settings, on a free port."""
    port = isolated
    try:
        api = local_server.ensure_local_server(timeout=120)
        assert api == f"http://127.0.0.1:{port}/api" and local_server.healthy(api, timeout=10)
        assert local_server.started_server_pid() is not None
    finally:
        pid = local_server.started_server_pid()
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
