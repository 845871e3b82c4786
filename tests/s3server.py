"""A real S3 protocol server (moto) on loopback for the shared-storage tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """Start the server; yield the AWS_* variables that point s3fs at it (also set in this process)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def upload_project(fs, folder: Path, remote: str) -> None:
    """A project folder's inputs (not its outputs) to `remote` (bucket/prefix)."""
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith("out") or part.startswith(".") for part in rel.parts):
            fs.put_file(str(path), f"{remote}/{rel.as_posix()}")
