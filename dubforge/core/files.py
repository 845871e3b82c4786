"""Atomic output files and content hashes (the basis of stage caching)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the suffix so tools that infer formats from it (ffmpeg) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; deliverables get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Content hash of a file, memoised on (path, size, mtime) within the process."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def fingerprint(*parts: Any, rebase: Callable[[str], Any] | None = None) -> str:
    """A short stable hash of JSON-serialisable parts (paths are hashed by content).

    `rebase` maps a string or folder path to a location-independent form (or None to keep it), so keys
    survive moving the project."""

    def encode(value: Any) -> Any:
        if isinstance(value, Path):
            if value.is_file():
                return {"file": sha256_file(value)}
            return {"path": (rebase and rebase(str(value))) or str(value)}
        if isinstance(value, str) and rebase is not None:
            rebased = rebase(value)
            return value if rebased is None else {"path": rebased}
        if hasattr(value, "model_dump"):
            return encode(value.model_dump(mode="python"))
        if isinstance(value, dict):
            return {str(k): encode(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        return value

    blob = json.dumps([encode(p) for p in parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def user_cache_dir() -> Path:
    """dubforge's per-user cache: `$DUBFORGE_CACHE`, else `$XDG_CACHE_HOME/dubforge`, else `~/.cache/dubforge`."""
    explicit = os.environ.get("DUBFORGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dubforge"
