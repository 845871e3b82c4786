"""Cache records that survive moving or copying a project folder.

Stage results (records holding paths into `OUT/.dubforge/work`, deliverables under OUT, the source media next to
the manifest) are pickled with every path under OUT or under the manifest's folder written relative to that root,
and resolved against the roots of the run that reads them. Cache keys hash such paths the same way, so a moved
project re-runs as all Cached instead of opening files in the old folder.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import pickle
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path, PosixPath
from typing import Any

import cloudpickle
from prefect.serializers import Serializer
from pydantic import Field

# (name, absolute prefix) pairs, most specific first: OUT usually lies inside the project folder.
_ROOTS: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("dubforge_project_roots", default=())


@contextlib.contextmanager
def project_roots(out: Path, project: Path) -> Iterator[None]:
    """Within this block, records are stored and read relative to `out` and `project` (the manifest's folder)."""
    roots = []
    for name, path in (("out", Path(out)), ("project", Path(project))):
        for form in dict.fromkeys((str(path.absolute()), str(path.resolve()))):
            roots.append((name, form.rstrip(os.sep)))
    token = _ROOTS.set(tuple(roots))
    try:
        yield
    finally:
        _ROOTS.reset(token)


def roots() -> tuple[tuple[str, str], ...]:
    return _ROOTS.get()


def split(text: str) -> tuple[str, str] | None:
    """(root name, relative path) if `text` is an absolute path under one of the current roots."""
    if not text.startswith(os.sep):
        return None
    for name, prefix in _ROOTS.get():
        if text == prefix:
            return name, ""
        if text.startswith(prefix + os.sep):
            return name, text[len(prefix) + 1:]
    return None


def join(name: str, relative: str) -> str:
    for root_name, prefix in _ROOTS.get():
        if root_name == name:
            return os.path.join(prefix, relative) if relative else prefix
    raise RuntimeError(f"a cached record refers to the project's {name!r} folder, but no project roots are set")


def relative_to_out(value: Any, out: Path, project: Path | None = None) -> Any:
    """A copy of report data with absolute paths under `out` (or the project folder) made relative to `out`."""
    prefixes = [str(Path(p).absolute()) for p in (out, project) if p is not None]
    if isinstance(value, dict):
        return {k: relative_to_out(v, out, project) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_to_out(v, out, project) for v in value]
    if isinstance(value, (str, Path)) and any(str(value).startswith(p + os.sep) for p in prefixes):
        return os.path.relpath(str(value), prefixes[0])
    return value


def resolve_in_out(value: Any, out: Path) -> Any:
    """The inverse of relative_to_out for a report entry: relative strings naming files under `out` made absolute."""
    if isinstance(value, dict):
        return {k: resolve_in_out(v, out) for k, v in value.items()}
    if isinstance(value, str) and value and not os.path.isabs(value) and os.path.isfile(Path(out) / value):
        return os.path.normpath(Path(out).absolute() / value)
    return value


class _Pickler(cloudpickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is str or kind is PosixPath:
            found = split(str(obj))
            if found is not None:
                return (kind is PosixPath, *found)
        return None


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        is_path, name, relative = pid
        text = join(name, relative)
        return Path(text) if is_path else text


class PortableSerializer(Serializer):
    """Prefect result serializer: cloudpickle with paths under the project's roots stored relative to them."""

    type: str = Field(default="dubforge-portable", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(obj)
        return base64.encodebytes(buffer.getvalue())

    def loads(self, blob: bytes) -> Any:
        return _Unpickler(io.BytesIO(base64.decodebytes(blob))).load()
