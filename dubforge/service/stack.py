"""`dubforge service up`: the single-machine service stack, in the foreground.

Prefect's own pieces, started as processes: (optional) PostgreSQL, `prefect server start` bound to
127.0.0.1 unless told otherwise, the `dubforge-cpu` and `dubforge-gpu` process work pools with their
deployments (flows/deployments.py), and `prefect worker start` processes. Ctrl-C (or SIGTERM) stops
workers, then the server, then PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefect.settings import PREFECT_UI_URL, temporary_settings

from dubforge.service.local_server import healthy
from dubforge.service.postgres import Postgres

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class StackConfig:
    home: Path  # PREFECT_HOME of the stack: database (SQLite or PostgreSQL data), logs
    host: str = "127.0.0.1"
    port: int = 4200
    postgres: bool = False
    pg_port: int = 55432
    pg_data: Path | None = None  # default: HOME/postgres
    workers: int = 2  # CPU workers
    gpu_workers: int = 1
    gpu_slots: int = 1  # lip-sync renders at once (the `gpu` tag limit and the GPU pool's run limit)
    worker_limit: int = 1  # flow runs at once per worker
    inbox: Path | None = None
    inbox_cron: str = "*/5 * * * *"
    out_root: Path | None = None  # inbox runs write OUT_ROOT/<manifest name>/ (default: the manifest's outputs.dir)
    zombie_after_s: int = 90  # a flow run without heartbeat for this long is marked Crashed
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/api"


def check_exposure(host: str, env: Mapping[str, str] | None = None) -> None:
    """Refuse to listen beyond loopback without Prefect's basic auth (PREFECT_SERVER_API_AUTH_STRING)."""
    env = os.environ if env is None else env
    if host not in LOOPBACK and not env.get("PREFECT_SERVER_API_AUTH_STRING"):
        raise RuntimeError(f"refusing to serve the Prefect API on {host} without authentication: set "
                           "PREFECT_SERVER_API_AUTH_STRING=user:password (clients: PREFECT_API_AUTH_STRING) "
                           "and put TLS in front of it (docs/service.md)")


def base_env(config: StackConfig, database_url: str | None) -> dict[str, str]:
    env = {**os.environ, **config.extra_env}
    env.update({
        "PREFECT_HOME": str(config.home),
        "PREFECT_API_URL": config.api_url,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": env.get("PREFECT_WORKER_QUERY_SECONDS", "2"),
        # a database restart answers a few requests with 500/503: clients retry instead of crashing the run
        "PREFECT_CLIENT_RETRY_EXTRA_CODES": env.get("PREFECT_CLIENT_RETRY_EXTRA_CODES", "500"),
        "PREFECT_CLIENT_MAX_RETRIES": env.get("PREFECT_CLIENT_MAX_RETRIES", "8"),
        # flow runs send heartbeats; the zombie automation (flows/deployments.py) crashes runs that stop
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": env.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30"),
    })
    if env.get("PREFECT_SERVER_API_AUTH_STRING") and not env.get("PREFECT_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = env["PREFECT_SERVER_API_AUTH_STRING"]
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    else:
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    return env


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:  # own session: Ctrl-C reaches only us, and we stop children in order
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def start_server(config: StackConfig, env: dict[str, str], timeout: float = 120.0) -> subprocess.Popen:
    check_exposure(config.host, env)
    if healthy(config.api_url):
        raise RuntimeError(f"something already answers on {config.api_url}: stop it or choose another --port")
    log = config.home / "logs" / "server.log"
    process = _spawn([_prefect(), "server", "start", "--host", config.host, "--port", str(config.port)], env, log)
    deadline = time.monotonic() + timeout
    while not healthy(config.api_url):
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited (code {process.returncode}); see {log}")
        if time.monotonic() > deadline:
            stop([process])
            raise RuntimeError(f"the Prefect server did not become healthy in {timeout:.0f} s; see {log}")
        time.sleep(0.25)
    return process


def start_worker(config: StackConfig, env: dict[str, str], pool: str, name: str) -> subprocess.Popen:
    command = [_prefect(), "worker", "start", "--pool", pool, "--type", "process", "--name", name,
               "--limit", str(config.worker_limit)]
    return _spawn(command, env, config.home / "logs" / f"{name}.log")


def setup(config: StackConfig, env: dict[str, str]) -> None:
    """Pools, limits and deployments, in a child process so it talks to this stack's API whatever our settings."""
    code = ("import sys; from pathlib import Path; from dubforge.flows.deployments import deploy_all; "
            "a = sys.argv[1:]; deploy_all(int(a[0]), Path(a[1]) if a[1] else None, a[2], Path(a[3]) if a[3] else None, "
            "int(a[4]))")
    args = [str(config.gpu_slots), str(config.inbox or ""), config.inbox_cron, str(config.out_root or ""),
            str(config.zombie_after_s)]
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"creating pools and deployments failed:\n{result.stderr.strip()}")


def stop(processes: list[subprocess.Popen], grace: float = 15.0) -> None:
    """SIGTERM everything (workers first, as listed), then SIGKILL what is left after `grace` seconds."""
    for process in processes:
        if process.poll() is None:
            with _ignore_gone():
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with _ignore_gone():
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class _ignore_gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is ProcessLookupError


class Stack:
    """The running stack; `start()` then `stop()` (or use it as a context manager)."""

    def __init__(self, config: StackConfig):
        self.config = config
        config.home = Path(config.home).absolute()
        self.postgres = Postgres(config.pg_data or config.home / "postgres", config.pg_port) if config.postgres else None
        self.server: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}

    def start(self, say=lambda message: None) -> None:
        self.config.home.mkdir(parents=True, exist_ok=True)
        try:
            database_url = None
            if self.postgres:
                say(f"PostgreSQL on 127.0.0.1:{self.config.pg_port} (data: {self.postgres.data_dir})")
                self.postgres.start()
                database_url = self.postgres.url
            self.env = base_env(self.config, database_url)
            say(f"Prefect server on {self.config.host}:{self.config.port}")
            self.server = start_server(self.config, self.env)
            say("work pools, the 'gpu' limit and deployments")
            setup(self.config, self.env)
            for index in range(self.config.workers):
                self.add_worker("dubforge-cpu", f"cpu-{index + 1}")
            for index in range(self.config.gpu_workers):
                self.add_worker("dubforge-gpu", f"gpu-{index + 1}")
        except BaseException:
            self.stop()
            raise

    def add_worker(self, pool: str, name: str) -> subprocess.Popen:
        self.workers[name] = start_worker(self.config, self.env, pool, name)
        return self.workers[name]

    def exited(self) -> list[str]:
        """Components that stopped on their own."""
        gone = [name for name, process in self.workers.items() if process.poll() is not None]
        if self.server is not None and self.server.poll() is not None:
            gone.append("server")
        return gone

    def stop(self) -> None:
        stop([*self.workers.values(), *([self.server] if self.server else [])])
        self.workers.clear()
        self.server = None
        if self.postgres:
            self.postgres.stop()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_foreground(config: StackConfig, say=print) -> int:
    """Start the stack, report where things are, block until Ctrl-C/SIGTERM or a component dies."""

    stack = Stack(config)
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start(say=lambda message: say(f"starting {message}"))
        with temporary_settings(updates={"PREFECT_API_URL": config.api_url}):
            ui = PREFECT_UI_URL.value() or config.api_url.removesuffix("/api")
        say(f"Prefect UI: {ui}")
        say(f"API for clients: export PREFECT_API_URL={config.api_url}")
        say(f"workers: {', '.join(stack.workers)}; logs in {config.home / 'logs'}")
        if config.inbox:
            say(f"inbox: {config.inbox} scanned on '{config.inbox_cron}'")
        say("Ctrl-C stops everything.")
        code = 0
        while not stopping:
            gone = stack.exited()
            if gone:
                say(f"stopped unexpectedly: {', '.join(gone)} (see {config.home / 'logs'}); shutting down")
                code = 1
                break
            time.sleep(0.5)
        say("stopping workers, server" + (", PostgreSQL" if stack.postgres else ""))
        return code
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
