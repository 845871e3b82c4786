"""Shared storage given as an fsspec URL (`s3://bucket/projects/alpha.yaml`, `gs://…`, `az://…`).

The media stages run ffmpeg/PyAV on files, so a run on a URL works on a *mirror* in the worker's staging
folder: the manifest and the inputs it names are fetched, the output folder's files (deliverables, work
files, Prefect's cache records) are pulled before the run and published back as work finishes. Workers
exchange files only through the URL, so a run resumed on another worker reuses everything that was published.

The mirror's path depends only on the URL (`$DUBFORGE_STAGING/<hash>/`, default `/tmp/dubforge-staging`),
the same on every worker, because Prefect's cache records hold the paths of work files. Credentials and
endpoints come from the filesystem's own configuration (for S3: AWS_* variables, `~/.aws`, FSSPEC_S3_*).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import fsspec
from fsspec import AbstractFileSystem
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from dubforge.core import model_store
from dubforge.core.errors import InputError, Problem
from dubforge.core.files import STAGING, atomic_path, write_json_atomic
from dubforge.core.manifest import FileTranslation, read_manifest
from dubforge.core.model_store import FILE_NAME

INDEX = ".dubforge/remote-index.json"  # rel path -> what was last synced (local size/mtime, remote key)
SKIPPED = (".dubforge/lock", INDEX)


def is_url(value: str | os.PathLike) -> bool:
    """An fsspec URL other than a plain local path (`file://` counts as local)."""
    text = str(value)
    return "://" in text and not text.startswith("file://")


def local_path(value: str | os.PathLike) -> Path:
    return Path(str(value).removeprefix("file://"))


def location(value: str | os.PathLike) -> str:
    """How a run is told where something is: a URL as given, a path made absolute."""
    return str(value) if is_url(value) else str(local_path(value).absolute())


def staging_root() -> Path:
    return Path(os.environ.get("DUBFORGE_STAGING") or Path(tempfile.gettempdir()) / "dubforge-staging")


def mirror_for(url: str) -> Path:
    return staging_root() / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def _filesystem(url: str):

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # unknown protocol, or its package (s3fs, gcsfs, adlfs) missing
        raise InputError(Problem(url, "", f"cannot open this storage URL: {exc}")) from None


def manifest_inputs(manifest) -> list[str]:
    """Files and folders a manifest names, relative to its folder (a model *name* is skipped when fetched)."""

    source = manifest.source
    names = [p for p in (source.video, source.image, source.audio, source.script, source.music_effects) if p]
    for target in manifest.targets:
        translation = target.translation
        if isinstance(translation, FileTranslation):
            names.append(translation.path)
        elif translation.backend == "ctranslate2" and translation.model:
            names.append(translation.model)
        for voice in (target.voice, *target.voices.values()):
            if voice.model:
                names += [voice.model, f"{voice.model}.json"]  # piper voices come with a .onnx.json
    return sorted({str(n) for n in names} | {FILE_NAME})


@dataclass
class Mirror:
    """A local copy of a remote folder, synced both ways by content key (ETag, generation...)."""

    fs: AbstractFileSystem
    remote: str  # the folder's path on fs (no protocol)
    local: Path

    def _index(self) -> dict[str, dict]:
        path = self.local / INDEX
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save_index(self, index: dict[str, dict]) -> None:

        write_json_atomic(self.local / INDEX, index)

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    def _download(self, remote: str, rel: str, index: dict[str, dict], info: dict | None = None) -> None:

        key = _content_key(info or self.fs.info(remote))
        target = self.local / rel
        known = index.get(rel)
        if known and known["remote"] == key and target.is_file() and self._stamp(target) == known["local"]:
            return
        with atomic_path(target) as tmp:
            self.fs.get_file(remote, str(tmp))
        index[rel] = {"remote": key, "local": self._stamp(target)}

    def fetch(self, names: list[str]) -> None:
        """Fetch these files or folders (relative to the remote folder); missing ones are left to validation."""
        index = self._index()
        for name in names:
            remote = f"{self.remote}/{PurePosixPath(name).as_posix()}"
            if self.fs.isdir(remote):
                for found, info in self.fs.find(remote, detail=True).items():
                    self._download(found, PurePosixPath(found).relative_to(self.remote).as_posix(), index, info)
            elif self.fs.isfile(remote):
                self._download(remote, name, index)
        self._save_index(index)

    def pull(self) -> None:
        """Make the local folder a copy of the remote one; files deleted remotely are deleted here too."""
        index = self._index()
        self.fs.invalidate_cache(self.remote)
        found = self.fs.find(self.remote, detail=True) if self.fs.isdir(self.remote) else {}
        remote_files = {PurePosixPath(f).relative_to(self.remote).as_posix(): (f, info) for f, info in found.items()}
        for rel in [r for r in index if r not in remote_files]:
            (self.local / rel).unlink(missing_ok=True)
            del index[rel]
        for rel, (remote, info) in remote_files.items():
            if not _skipped(rel):
                self._download(remote, rel, index, info)
        self._save_index(index)

    def publish(self) -> int:
        """Upload new and changed local files; Prefect's cache records go last, after the files they name.
        One object is one PUT, so a reader sees a whole file or none. Returns the number of files sent."""
        index = self._index()
        changed = []
        for path in sorted(self.local.rglob("*")):
            rel = path.relative_to(self.local).as_posix()
            with contextlib.suppress(FileNotFoundError):  # a scratch file may go between listing and stat
                if path.is_file() and not _skipped(rel) and index.get(rel, {}).get("local") != self._stamp(path):
                    changed.append(rel)
        changed.sort(key=lambda rel: rel.startswith(".dubforge/cache/"))
        for rel in changed:
            remote = f"{self.remote}/{rel}"
            try:
                stamp = self._stamp(self.local / rel)
                self.fs.put_file(str(self.local / rel), remote)
            except FileNotFoundError:  # a stage's scratch file, gone since the listing: nothing to publish
                continue
            index[rel] = {"remote": _content_key(self.fs.info(remote)), "local": stamp}
            self._save_index(index)
        return len(changed)


def _content_key(info: dict) -> str:
    """What changes when the object changes: its ETag (S3, Azure), md5/generation (GCS), else size + mtime."""
    for field in ("ETag", "etag", "md5Hash", "generation"):
        if info.get(field):
            return f"{info[field]}:{info.get('size')}"
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('last_modified')}"


def _skipped(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    # .dubforge/staging/: a language's files being built, moved into place whole by another lane while this one
    # publishes; they are published from there
    return (rel in SKIPPED or rel.startswith((".dubforge/temporaries/", f"{STAGING.as_posix()}/"))
            or (name.startswith(".") and ".part" in name))


def stage_manifest(url: str, into: Path | None = None) -> Path:
    """Fetch a manifest at a URL, the inputs it names and the weights its models.yaml keeps beside it; return
    the local manifest path. Storage errors (no credentials, no such bucket, no network) are InputErrors."""

    fs, path = _filesystem(url)
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    mirror = Mirror(fs, folder, (into or mirror_for(url)) / "project")
    local = mirror.local / name
    try:
        if not fs.isfile(path):
            raise InputError(Problem(url, "", "manifest file not found"))
        mirror.fetch([name])
        try:
            manifest = read_manifest(local)
        except InputError as error:
            raise remap(error, local, url) from None
        mirror.fetch(manifest_inputs(manifest))
        models = local.parent / model_store.FILE_NAME
        if models.is_file():
            root = mirror.local.resolve()
            mirror.fetch([e.path.relative_to(root).as_posix() for e in model_store.load(models).values()
                          if e.path.is_relative_to(root)])
    except InputError:
        raise
    except Exception as exc:  # the filesystem's own errors: botocore's NoCredentialsError, OSError, ...
        raise InputError(Problem(url, "", f"cannot read from this storage: {type(exc).__name__}: {exc}")) from None
    return local


def out_mirror(url: str) -> Mirror:
    fs, path = _filesystem(url)
    return Mirror(fs, path.rstrip("/"), mirror_for(url) / "out")


def remap(error: InputError, local: Path, url: str) -> InputError:
    """Problems found in the staged copy, named by the URL the user gave."""
    return InputError([Problem(url if p.file == str(local) else p.file, p.key, p.message) for p in error.problems])


@contextlib.contextmanager
def out_lock(url: str, wait_s: float = 120) -> Iterator[None]:
    """One run per output URL at a time, across workers: a Prefect global concurrency limit of 1 for this URL.
    Its lease expires when the holder dies (SIGKILL), so a resumed run waits at most about `wait_s`."""

    name = f"dubforge-out-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another worker created it just now
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    holding = False
    try:
        with concurrency(name, occupy=1, timeout_seconds=wait_s, lease_duration=60, strict=True):
            holding = True
            yield
    except TimeoutError:
        if holding:
            raise
        raise RuntimeError(f"another dubforge run is writing to {url}; wait for it or use another --out") from None
