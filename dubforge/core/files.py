"""Atomic output files and content hashes (the basis of stage caching)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

OWNED_MARKER = Path(".dubforge") / "owned"  # in an output folder dubforge uses: its temporaries are journaled
JOURNAL = Path(".dubforge") / "temporaries"  # one record per temporary file not yet renamed or removed
STAGING = Path(".dubforge") / "staging"  # sets of files being built, moved into place whole


def claim_output_folder(out: Path) -> None:
    """Mark `out` as a dubforge output folder: from now on atomic writes under it journal their temporaries,
    so that `sweep_temporaries` can remove an interrupted run's leftovers, and nothing else."""
    out = Path(out)
    marker = out / OWNED_MARKER
    if not marker.is_file():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("dubforge output folder: temporaries are journaled in .dubforge/temporaries\n")


def _journal_of(path: Path) -> tuple[Path, Path] | None:
    """(output folder, journal folder) of the nearest claimed folder above `path`, if any."""
    for folder in path.parents:
        if (folder / OWNED_MARKER).is_file():
            return folder, folder / JOURNAL
    return None


def sweep_temporaries(out: Path) -> list[Path]:
    """Remove the temporaries an interrupted run journaled in `out` (the caller holds the folder's run lock).

    Only files recorded by `atomic_path` in a claimed folder are touched, never a file by its name alone."""
    out = Path(out).absolute()
    journal = out / JOURNAL
    if not (out / OWNED_MARKER).is_file():
        return []
    journal.mkdir(exist_ok=True)
    removed = []
    staging = out / STAGING
    if staging.is_dir():  # dubforge's own folder: unfinished or replaced sets of files
        removed += sorted(staging.iterdir())
        shutil.rmtree(staging, ignore_errors=True)
    for record in sorted(journal.iterdir()):
        try:
            relative = Path(record.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            relative = Path()
        target = out / relative
        if (relative.parts and not relative.is_absolute() and ".." not in relative.parts
                and target.name.startswith(".") and ".part" in target.name and target.is_file()):
            target.unlink(missing_ok=True)
            removed.append(target)
        record.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the suffix so tools that infer formats from it (ffmpeg) still work. Under a
    claimed output folder the temporary is journaled before it exists, so a killed run's leftover is swept.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    tmp_path = path.with_name(f".{path.stem}.{token}.part{path.suffix}")
    owner = _journal_of(path)
    record = None
    if owner is not None:
        folder, journal = owner
        journal.mkdir(parents=True, exist_ok=True)
        record = journal / token
        record.write_text(tmp_path.relative_to(folder).as_posix(), encoding="utf-8")
    try:
        os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        if record is not None:
            record.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(final: Path, staging_root: Path) -> Iterator[Path]:
    """Yield an empty folder under `staging_root` (same file system as `final`); if the block succeeds it
    replaces the folder `final` as a whole, else it is removed: a set of files appears together or not at all.

    Between the two renames `final` is briefly absent, never partial; a crash there leaves the previous set in
    the staging folder, which the next run's sweep removes (and the set is made again)."""
    final = Path(final).absolute()
    staging_root = Path(staging_root)
    staging_root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    building = staging_root / f"{final.name}.{token}.new"
    building.mkdir()
    try:
        yield building
        replaced = staging_root / f"{final.name}.{token}.old"
        if final.exists():
            os.replace(final, replaced)
        os.replace(building, final)
        shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashIndex:
    """Content hashes kept across processes (`user_cache_dir()/file-hashes.sqlite3`), keyed by path, size, mtime,
    ctime and inode, the way git's index trusts a file whose stat has not changed: a run hashed about 400 MB of
    media and intermediates that had not changed since the last one (about 1 cpu s). Any write changes the ctime,
    which no tool can set back. Measurements of a file's content (`measured`) are kept beside, by its hash.
    Without a writable cache the index is simply not used."""

    KEEP_DAYS = 30

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._opened = False
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection | None:
        if not self._opened:
            self._opened = True
            try:
                folder = user_cache_dir()
                folder.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(folder / "file-hashes.sqlite3", timeout=5, check_same_thread=False,
                                     isolation_level=None)
                db.execute("CREATE TABLE IF NOT EXISTS hashes (key TEXT PRIMARY KEY, sha256 TEXT, seen REAL)")
                db.execute("DELETE FROM hashes WHERE seen < ?", (time.time() - self.KEEP_DAYS * 86400,))
                db.execute("CREATE TABLE IF NOT EXISTS measures (key TEXT PRIMARY KEY, value TEXT, seen REAL)")
                db.execute("DELETE FROM measures WHERE seen < ?", (time.time() - self.KEEP_DAYS * 86400,))
                self._db = db
            except (sqlite3.Error, OSError):
                self._db = None
        return self._db

    def get(self, key: str, table: str = "hashes") -> str | None:
        with self._lock:
            try:
                db = self._open()
                row = db.execute(f"SELECT * FROM {table} WHERE key = ?", (key,)).fetchone() if db else None
            except sqlite3.Error:
                return None
        return row[1] if row else None

    def put(self, key: str, value: str, table: str = "hashes") -> None:
        with self._lock:
            try:
                db = self._open()
                if db is not None:
                    db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", (key, value, time.time()))
            except sqlite3.Error:
                pass


_INDEX = _HashIndex()


@lru_cache(maxsize=4096)
def _sha256(key: str) -> str:
    path = key.split("\0", 1)[0]
    digest = _INDEX.get(key)
    if digest is None:
        digest = _digest(path)
        _INDEX.put(key, digest)
    return digest


def _stat_key(path: Path) -> str:
    stat = os.stat(path)
    return "\0".join(map(str, (Path(path).resolve(), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)))


def sha256_file(path: Path) -> str:
    """Content hash of a file, memoised on its stat (path, size, mtime, ctime, inode) in the process and across
    processes (`_HashIndex`)."""
    return _sha256(_stat_key(path))


def kept_by_stat(path: Path, what: str, read: Callable[[Path], str]) -> str:
    """`read(path)`, a text read from a file's headers, kept across processes by the file's stat identity (as its
    hash is) and `what` (name and version of the reading): no hashing, so a first look at a large file stays
    cheap, and an unchanged file is not opened again. A failing `read` keeps nothing."""
    key = f"stat:{_stat_key(path)}:{what}"
    kept = _INDEX.get(key, "measures")
    if kept is None:
        kept = read(path)
        _INDEX.put(key, kept, "measures")
    return kept


def measured(path: Path, what: str, measure: Callable[[Path], float]) -> float:
    """`measure(path)`, kept by the file's content hash and `what` (name and version of the measurement) across
    processes: a measurement of an unchanged source is not made again by every run."""
    key = f"{sha256_file(path)}:{what}"
    kept = _INDEX.get(key, "measures")
    if kept is not None:
        return float(kept)
    value = float(measure(path))
    _INDEX.put(key, repr(value), "measures")
    return value


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


def installed_versions(*distributions: str) -> tuple[str, ...]:
    """`name==version` of each distribution ("==absent" if not installed): cache keys change when a model or
    engine that shaped an output is upgraded."""
    found = []
    for name in distributions:
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name}==absent")
    return tuple(found)
