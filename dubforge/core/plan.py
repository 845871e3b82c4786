"""Validation of a manifest against the file system, media and backends: the plan of a run.

`make_plan` checks everything a run needs before any work starts and reports every problem at once
(InputError). `dubforge validate` prints the plan; `dubforge run` executes it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import av

from dubforge.core.contracts import MediaInfo, Segment
from dubforge.core.errors import InputError, Problem
from dubforge.core.languages import LanguageError, base_language, normalise_language
from dubforge.core.manifest import (
    FileTranslation,
    MachineTranslation,
    Manifest,
    Voice,
    outputs_problem,
    read_manifest,
    resolve_input,
    semantic_problems,
)
from dubforge.core.registry import UnknownBackend, available, load_class
from dubforge.core.scripts import read_script
from dubforge.core.voice_bank import bank_path, bank_voices, read_voice_bank
from dubforge.media.probe import check_complete, probe, probe_portrait

SEPARATION_MODES = ("auto", "provided", "none")


@dataclass
class LanguagePlan:
    language: str
    translation: str  # "file: <path>" or "machine: <backend>"
    translation_file: Path | None
    translation_segments: list[Segment] | None
    machine: MachineTranslation | None  # with a ctranslate2 model folder resolved to an absolute path
    voices: dict[str, Voice]  # speaker -> voice ("*" = default), backends resolved (no "auto")
    voice_models: dict[str, Path]  # speaker -> resolved model file/folder (else `voice.model` is a registry name)


@dataclass
class Plan:
    manifest: Manifest
    video: Path  # the source video, or the photo of a portrait
    portrait_audio: Path | None  # the speech of a portrait (source.image)
    media: MediaInfo
    script: Path | None
    script_segments: list[Segment] | None
    music_effects: Path | None
    separation: str  # provided | none | a separation backend
    mix_mode: str  # replace | voice_over
    out_dir: Path
    languages: list[LanguagePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown by `validate` and at the start of a run

    @property
    def duration(self) -> float:
        return self.media.duration


# `voice: auto` per base language where a neural voice back-transcribes better than espeak-ng
# (benchmarks/languages.py, docs/benchmarks.md); every other language gets espeak-ng.
AUTO_VOICES = {"en": "piper", "ja": "kokoro",
               **dict.fromkeys(("es", "fr", "it", "pt", "de", "nl", "ca", "ro", "pl", "sv"), "kokoro")}


def resolve_voice_backend(voice: Voice, language: str) -> str:
    if voice.backend != "auto":
        return voice.backend
    if voice.name is not None:  # a named voice without a backend: espeak's voice names
        return "espeak"
    base = base_language(language)
    if base == "ja" and importlib.util.find_spec("pyopenjtalk") is None:  # Kokoro's Japanese G2P: the `ja` extra
        return "espeak"
    return AUTO_VOICES.get(base, "espeak")


def _machine_pair_problem(file: str, key: str, backend: str, source: str, target: str) -> Problem | None:
    """A machine translation pair the chosen backend cannot serve (backends that declare `supports`)."""
    if source != "auto" and base_language(source) == base_language(target):
        return None  # re-voicing in the same language: nothing to translate
    try:
        supports = getattr(load_class("translate", backend), "supports", None)
    except (UnknownBackend, ImportError):
        return None  # reported by _check_backend
    if supports is None or supports(None if source == "auto" else source, target):
        return None
    shown = "the detected language" if source == "auto" else source
    return Problem(file, key, f"the {backend} backend does not translate {shown} -> {target}; give a translated script "
                   "(translation: {from: file, path: lines.srt|.vtt|.csv}) or another machine backend "
                   "(ctranslate2 with a model folder, openai with an endpoint)")


def _check_backend(problems: list[Problem], file: str, stage: str, name: str, key: str) -> None:
    if name not in available(stage):
        known = ", ".join(sorted(available(stage))) or "none installed"
        problems.append(Problem(file, key, f"unknown {stage} backend {name!r} (known: {known})"))


def make_plan(manifest_path: Path, languages: list[str] | None = None, out_dir: Path | None = None) -> Plan:

    manifest = read_manifest(Path(manifest_path))
    file = str(manifest.path)
    problems: list[Problem] = semantic_problems(manifest)
    bad_languages = {p.key for p in problems if p.key.endswith("language")}

    def resolve(key: str, value) -> Path | None:
        path, problem = resolve_input(manifest, key, value)
        if problem:
            problems.append(problem)
        return path

    portrait = manifest.source.image is not None
    video = resolve("source.video", manifest.source.video) if not portrait else resolve("source.image", manifest.source.image)
    audio = resolve("source.audio", manifest.source.audio) if portrait else None
    script = resolve("source.script", manifest.source.script) if manifest.source.script else None
    music_effects = resolve("source.music_effects", manifest.source.music_effects) if manifest.source.music_effects else None

    media = None
    if video and (audio or not portrait):
        try:
            media = (probe_portrait(video, audio) if portrait and audio else
                     probe(video, key="source.video", language=manifest.source.language,
                           audio_stream=manifest.source.audio_stream))
            if not portrait:
                check_complete(media)
        except InputError as exc:
            problems.extend(exc.problems)
    duration = media.duration if media else None

    script_segments = None
    if script:
        try:
            script_segments = read_script(script, video_duration=duration, column="transcription")
        except InputError as exc:
            problems.extend(exc.problems)
    if media and not media.has_audio and not script:
        problems.append(
            Problem(str(video), "source.video", "the video has no audio track and no source.script is given: nothing to transcribe")
        )
    if not script:
        _check_backend(problems, file, "asr", manifest.asr.backend, "asr")
    if manifest.alignment != "auto":
        _check_backend(problems, file, "align", manifest.alignment, "alignment")
    if manifest.lipsync.enabled:
        _check_backend(problems, file, "lipsync", manifest.lipsync.backend, "lipsync.backend")
        if portrait and manifest.lipsync.backend in available("lipsync"):
            renderer = load_class("lipsync", manifest.lipsync.backend)
            if not getattr(renderer, "supports_portrait", False):
                problems.append(Problem(file, "lipsync.backend", f"{manifest.lipsync.backend!r} cannot animate a still "
                                        "photo (source.image); use mouth-bank"))

    if music_effects:
        problem = _check_audio_file(music_effects, file, "source.music_effects")
        if problem:
            problems.append(problem)
    chosen = manifest.separation.backend
    if chosen in SEPARATION_MODES:
        separation = "provided" if music_effects and chosen in ("auto", "provided") else "none"
    else:  # a separation backend (demucs...): it makes the M&E stem from the source's audio
        _check_backend(problems, file, "separate", chosen, "separation")
        separation = chosen
        if media and not media.has_audio:
            problems.append(Problem(file, "separation", f"{chosen} separates the source's audio, but the video has none"))
    if chosen == "provided" and not manifest.source.music_effects:
        problems.append(Problem(file, "separation", "'provided' needs source.music_effects (the studio's M&E stem)"))
    mix_mode = manifest.mix.mode
    if mix_mode == "auto":
        mix_mode = "voice_over" if separation == "none" else "replace"
    elif mix_mode == "replace" and separation == "none":
        problems.append(
            Problem(file, "mix.mode", "'replace' needs a music & effects stem (source.music_effects); use voice_over or auto")
        )
    if mix_mode == "voice_over" and media and not media.has_audio:
        problems.append(Problem(file, "mix.mode", "voice_over needs the source's own audio, but the video has none"))

    targets = manifest.targets
    if languages:
        wanted = [_normalised(code) for code in languages]
        known = {_normalised(t.language) for t in targets}
        for code in wanted:
            if code not in known:
                problems.append(Problem(file, "targets", f"--languages names {code!r}, which is not a target of this manifest"))
        targets = [t for t in targets if _normalised(t.language) in wanted]

    bank: dict[str, dict[str, Voice]] = {}
    voices_file = bank_path(manifest)
    if voices_file is not None:
        try:
            bank = read_voice_bank(voices_file)
        except InputError as exc:
            problems.extend(exc.problems)

    plans: list[LanguagePlan] = []
    for index, target in enumerate(manifest.targets):
        key = f"targets[{index}]"
        if target not in targets or f"{key}.language" in bad_languages:
            continue
        language = normalise_language(target.language)
        translation = target.translation
        segments, tfile, machine = None, None, None
        if isinstance(translation, FileTranslation):
            tfile = resolve(f"{key}.translation.path", translation.path)
            if tfile and duration is not None:
                try:
                    segments = read_script(tfile, video_duration=duration, column="translation")
                except InputError as exc:
                    problems.extend(exc.problems)
            label = f"file {translation.path}"
        else:
            assert isinstance(translation, MachineTranslation)
            _check_backend(problems, file, "translate", translation.backend, f"{key}.translation.backend")
            pair = _machine_pair_problem(file, f"{key}.translation", translation.backend, manifest.source.language,
                                         language)
            if pair:
                problems.append(pair)
            label = f"machine ({translation.backend})"
            machine = translation
            if translation.backend == "ctranslate2":
                folder = (manifest.root / (translation.model or "")).resolve()
                if not translation.model or not folder.is_dir():
                    problems.append(Problem(file, f"{key}.translation.model",
                                            f"ctranslate2 needs a model folder (got {translation.model!r}, not a folder)"))
                else:
                    machine = translation.model_copy(update={"model": str(folder)})
        voices = {"*": target.voice, **bank_voices(bank, language), **target.voices}
        resolved_voices, models = {}, {}
        for speaker, voice in voices.items():
            vkey = f"{key}.voice" if speaker == "*" else f"{key}.voices.{speaker}"
            if speaker != "*" and speaker not in target.voices:
                vkey = f"voice_bank {bank_path(manifest)}: {speaker}.{language}"
            backend = resolve_voice_backend(voice, language)
            _check_backend(problems, file, "tts", backend, f"{vkey}.backend")
            local = manifest.root / voice.model if voice.model else None
            if voice.model and (backend == "piper" or (local is not None and local.exists())):  # a file or folder beside the manifest
                model = resolve(f"{vkey}.model", voice.model) if backend == "piper" or local is None else local.resolve()
                if model:
                    models[speaker] = model
            if voice.clone and separation in ("provided", "none"):
                problems.append(Problem(file, f"{vkey}.clone", "cloning needs the separated dialogue: set separation to a "
                                        "separation backend such as demucs"))
            resolved_voices[speaker] = voice.model_copy(update={"backend": backend})
        plans.append(LanguagePlan(language, label, tfile, segments, machine, resolved_voices, models))

    warnings = _audio_warnings(manifest, media) if media and not portrait else []
    if out_dir is None and (problem := outputs_problem(manifest)):
        problems.append(problem)
    if problems or video is None or media is None:  # no problem listed means both were found
        raise InputError(problems)
    out = Path(out_dir) if out_dir else manifest.root / manifest.outputs.dir
    return Plan(
        manifest=manifest,
        video=video,
        portrait_audio=audio,
        media=media,
        script=script,
        script_segments=script_segments,
        music_effects=music_effects,
        separation=separation,
        mix_mode=mix_mode,
        out_dir=out.absolute(),
        languages=plans,
        warnings=warnings,
    )


def _audio_warnings(manifest: Manifest, media: MediaInfo) -> list[str]:
    """The chosen audio stream's language tag disagrees with source.language (a commentary or another dub?)."""
    if not media.has_audio or media.audio_language == "und":
        return []
    try:
        tagged = base_language(normalise_language(media.audio_language))
    except LanguageError:
        tagged = media.audio_language
    if tagged == base_language(manifest.source.language):
        return []
    streams = ", ".join(f"{i}: {tag}" for i, tag in enumerate(media.audio_languages))
    return [f"source.language is {manifest.source.language!r} but the audio stream used ({media.audio_index}) is tagged "
            f"{media.audio_language!r} (audio streams {streams}); set source.audio_stream or source.language"]


def _check_audio_file(path: Path, file: str, key: str) -> Problem | None:

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return Problem(file, key, f"{path} has no audio stream (expected a WAV/FLAC M&E stem)")
    except (av.FFmpegError, UnicodeDecodeError):
        return Problem(file, key, f"{path} is not an audio file (expected a WAV/FLAC M&E stem)")
    return None


def _normalised(code: str) -> str:
    try:
        return normalise_language(code)
    except ValueError:
        return code
