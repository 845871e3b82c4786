"""A private PostgreSQL cluster for the single-machine stack (and the service tests).

`initdb` + `pg_ctl` in a data folder, listening on 127.0.0.1 only, password (scram) auth over TCP. PostgreSQL
refuses to run as root, so as root the cluster belongs to (and runs as) the `postgres` system user.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

DATABASE = "prefect"
USER = "prefect"


def _bindir() -> Path:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: no `initdb` on PATH or in /usr/lib/postgresql/*/bin "
                           "(Debian/Ubuntu: apt-get install -y postgresql)")
    return Path(found[-1]).parent


class Postgres:
    """One cluster in `data_dir` on 127.0.0.1:`port`; `start()` creates it on first use."""

    def __init__(self, data_dir: Path, port: int = 55432):
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.bindir = _bindir()
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"
        self.log = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL for Prefect (`PREFECT_API_DATABASE_CONNECTION_URL`)."""
        return f"postgresql+asyncpg://{USER}:{self.password()}@127.0.0.1:{self.port}/{DATABASE}"

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / tool), *args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        env = {**os.environ, "PGPASSWORD": self.password()} if self.password_file.exists() else None
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd="/")
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()}")
        return result

    def _chown(self, path: Path) -> None:
        if self.owner:
            entry = pwd.getpwnam(self.owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir)
        self.data_dir.chmod(0o700)
        if self.owner and subprocess.run(["runuser", "-u", self.owner, "--", "test", "-w", str(self.data_dir)]).returncode:
            raise RuntimeError(f"PostgreSQL runs as '{self.owner}', who cannot reach {self.data_dir}: "
                               "choose a data folder outside private home directories (e.g. under /var/lib or /srv)")
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        fd, name = tempfile.mkstemp(prefix=".initdb-", dir=self.data_dir.parent)  # for the cluster owner only
        pwfile = Path(name)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password())
        self._chown(pwfile)
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", USER, f"--pwfile={pwfile}", "-E", "UTF8",
                      "--auth-local=scram-sha-256", "--auth-host=scram-sha-256")
        finally:
            pwfile.unlink(missing_ok=True)

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        self.init()
        if not self.running():
            self.log.touch()
            self._chown(self.log)
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir}"
            self._run("pg_ctl", "start", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir), "-l", str(self.log),
                      "-o", options)
        self._ensure_database(timeout)

    def _ensure_database(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False)
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on 127.0.0.1:{self.port} is not ready; see {self.log}")
            time.sleep(0.2)
        exists = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres", "-tAc",
                           f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.stdout.strip() != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)

    def restart(self) -> None:
        """Fast restart (drops every connection): what a database fail-over looks like to the server."""
        self._run("pg_ctl", "restart", "-w", "-m", "fast", "-D", str(self.data_dir), "-l", str(self.log))

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir), check=False)
