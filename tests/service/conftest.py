"""The service stack for the `service` tests: real PostgreSQL, Prefect server, process pools and workers.

One stack per test session (started by `dubforge.service.stack.Stack`, the code behind `dubforge service up`):
PostgreSQL in a temp folder on a free port, the server on a free port, two CPU workers and one GPU worker.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml


def pytest_configure(config):
    config.addinivalue_line("markers", "service: integration tests against a real Prefect server, PostgreSQL and workers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    stack: object  # dubforge.service.stack.Stack
    root: Path
    demo: Path  # demo media + manifests (es, de, fr, pt-BR)
    s3_env: dict[str, str] | None  # AWS_* variables of the test S3 server (None: moto/s3fs not installed)

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    @property
    def api_url(self) -> str:
        return self.stack.config.api_url

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "dubforge", *args], capture_output=True, text=True,
                                env=self.env, timeout=timeout)
        if check:
            assert result.returncode == 0, f"dubforge {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}"
        return result

    def submit(self, manifest: Path, *args: str) -> str:
        """`dubforge submit`; the flow run id is the last line of its output."""
        return self.cli("submit", str(manifest), *args).stdout.strip().splitlines()[-1]


def project(folder: Path, name: str, languages: list[str], **changes) -> Path:
    """A manifest beside the demo media: the demo's targets for `languages` (others read the Spanish script with
    their own espeak voice), outputs in `out-<name>`. These tests are about the service, so the dubs are not heard
    back (qc.back_transcription: tested in tests/test_languages.py and the end-to-end tests)."""
    data = yaml.safe_load((folder / "demo.yaml").read_text())
    known = {t["language"]: t for t in data["targets"]}
    spare = {"language": "", "translation": {"from": "file", "path": "scripts/demo.es.srt"}, "voice": {"backend": "espeak"}}
    data["targets"] = [known.get(lang, {**spare, "language": lang}) for lang in languages]
    data.update(project=name, outputs={**data["outputs"], "dir": f"out-{name}"}, qc={"back_transcription": False},
                **changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def service():
    if not (shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))):
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    from dubforge.demo.project import make_demo
    from dubforge.service.stack import Stack, StackConfig
    from tests.s3server import s3_server

    root = Path(tempfile.mkdtemp(prefix="dubforge-service-", dir="/tmp"))  # the postgres user must reach it
    root.chmod(0o755)
    with contextlib.ExitStack() as cleanup:
        # shared storage on a URL: a real S3 protocol server that the workers reach through AWS_* variables
        s3_env = cleanup.enter_context(s3_server()) if _has("moto.server") and _has("s3fs") else None
        config = StackConfig(home=root / "home", port=free_port(), postgres=True, pg_port=free_port(),
                             pg_data=root / "pg", workers=2, gpu_workers=1,
                             extra_env={"PREFECT_LOGGING_LEVEL": "INFO", "DUBFORGE_STAGING": str(root / "staging"),
                                        **(s3_env or {})})
        stack = Stack(config)
        stack.start()
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        cleanup.callback(stack.stop)
        demo = root / "demo"
        make_demo(demo, seconds=8, languages=["es", "de", "fr", "pt-BR"])
        yield Service(stack, root, demo, s3_env)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module.split(".")[0]) is not None and importlib.util.find_spec(module) is not None


@pytest.fixture(autouse=True)
def _api(request):
    """In-process Prefect calls of a service test go to the stack's API."""
    if "service" not in request.fixturenames:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: request.getfixturevalue("service").api_url}):
        yield


def task_runs(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key or a.type: a for a in found}


def wait(flow_run_id: str, timeout: float = 180):
    from dubforge.service.submit import wait as wait_for

    return wait_for(flow_run_id, poll=0.5, timeout=timeout)


def explain(service: Service, final) -> str:
    """An unfinished run's state and message, and the tail of every stack log: what CI shows of a failure."""
    logs = sorted((service.stack.config.home / "logs").glob("*.log"))
    tails = [f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]) for log in logs]
    return "\n".join([f"{final.name} ({final.id}): {final.state}: {final.message}", *tails])


def assert_deliverables_whole(out: Path) -> None:
    """Every visible file under OUT is complete: media decode to the end, provenance hashes match."""
    import json

    import av

    from dubforge.core.files import sha256_file

    for path in sorted(out.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(out).parts):
            continue
        if path.suffix in (".mp4", ".mkv", ".wav"):
            with av.open(str(path)) as container:
                frames = sum(1 for _ in container.decode(audio=0))
            assert frames > 0, path
        if path.name.endswith(".provenance.json"):
            described = path.with_name(path.name.removesuffix(".provenance.json"))
            record = json.loads(path.read_text())
            assert record["asset"]["sha256"] == sha256_file(described), f"{described} does not match its provenance"
            assert record["asset"]["bytes"] == described.stat().st_size
        if path.suffix == ".json":
            json.loads(path.read_text())
