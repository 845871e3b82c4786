"""`dubforge` command line: a thin shell over `dubforge.core.plan` and the `dub-project` flow.

Exit codes: 0 success, 1 some languages failed (the others are complete), 2 invalid input.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Optional

import typer
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from rich.console import Console
from rich.markup import escape

from dubforge.core import model_store
from dubforge.core.errors import InputError, Problem, StageError
from dubforge.core.files import write_text_atomic
from dubforge.core.manifest import manifest_json_schema
from dubforge.core.plan import make_plan
from dubforge.core.reports import qc_json_schema
from dubforge.core.scaffold import manifest_text, project_name
from dubforge.demo.project import make_demo
from dubforge.flows.prepare import prepare as prepare_sheets
from dubforge.flows.storage import is_url, local_path, remap, stage_manifest
from dubforge.runner import run_with_display
from dubforge.service.local_server import SLOW_HEALTH_S, healthy, local_api, prefect_home, prune_flow_runs
from dubforge.service.stack import StackConfig, run_foreground
from dubforge.service.submit import status as read_status
from dubforge.service.submit import submit as create_run
from dubforge.service.submit import ui_url_for
from dubforge.service.submit import wait as wait_for
from dubforge.summary import plan_summary, run_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Dub videos into many languages from a YAML manifest.")
console = Console(stderr=True)
out_console = Console()



def _version(value: bool) -> None:
    if value:
        out_console.print(f"dubforge {version('dubforge')} (prefect {version('prefect')})", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False,
) -> None:
    """Dub videos into many languages from a YAML manifest."""


def _fail_input(error: InputError) -> None:
    console.print(f"[bold red]Invalid input[/] ({len(error.problems)} problem{'s' if len(error.problems) != 1 else ''}):")
    for problem in error.problems:
        console.print(f"  - {problem}", highlight=False, markup=False)
    raise typer.Exit(2)


def _languages(value: str | None) -> list[str] | None:
    return [code.strip() for code in value.split(",") if code.strip()] if value else None


def _plan(manifest: str, languages: str | None, out: str | None, staging: Path | None = None):
    """Validate (exit 2 listing every problem) and plan; a manifest at a URL is fetched first (into `staging`)."""

    local = local_path(manifest)
    try:
        if is_url(manifest):
            local = stage_manifest(manifest, into=staging)
        try:
            return make_plan(local, _languages(languages), None if out is None or is_url(out) else local_path(out)), local
        except InputError as error:
            raise remap(error, local, manifest) if is_url(manifest) else error from None
    except InputError as error:
        _fail_input(error)


MANIFEST_HELP = "manifest file, or an fsspec URL of shared storage (s3://bucket/project/alpha.yaml)"


@app.command()
def validate(manifest: Annotated[str, typer.Argument(help=MANIFEST_HELP)],
             languages: Annotated[Optional[str], typer.Option(help="comma-separated subset")] = None):
    """Check a manifest, its media and scripts; print the plan. Exit 2 listing every problem."""

    with tempfile.TemporaryDirectory(prefix="dubforge-validate-") as scratch:
        plan, _local = _plan(manifest, languages, None, Path(scratch))
        out_console.print(plan_summary(plan))


@app.command()
def run(
    manifest: Annotated[str, typer.Argument(help=MANIFEST_HELP)],
    languages: Annotated[Optional[str], typer.Option(help="comma-separated subset of the targets, e.g. es,de")] = None,
    out: Annotated[Optional[str], typer.Option(help="output folder or URL (default: outputs.dir of the manifest)")] = None,
    ephemeral: Annotated[bool, typer.Option(help="use a throw-away Prefect server instead of the local one")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live view or progress; errors and the report path only")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show Prefect's INFO log lines")] = False,
):
    """Run the dub-project flow on a manifest, with a live view per language."""
    plan, _local = _plan(manifest, languages, out)
    verbosity = "quiet" if quiet else "verbose" if verbose else "normal"
    raise typer.Exit(_run_flow(plan, manifest, _languages(languages), out, ephemeral, verbosity))


def _run_flow(plan, manifest: str | Path, languages: list[str] | None, out: str | Path | None, ephemeral: bool,
              verbosity: str = "normal") -> int:

    report = run_with_display(plan, manifest, languages, out, ephemeral, console, verbosity)
    if report is None:
        return 1
    failed = {lang: r for lang, r in report["languages"].items()  # previous_run: kept from an earlier run
              if r["status"] not in ("completed", "skipped") and not r.get("previous_run")}
    published = report.get("published")
    if verbosity != "quiet" and not published:
        out_console.print(run_summary(report, plan.out_dir))
    out_console.print(f"Report: {published + '/report.json' if published else plan.out_dir / 'report.json'}")
    for warning in report.get("warnings", []):
        console.print(f"[yellow]⚠[/] {escape(warning)}", highlight=False, soft_wrap=True)
    source = report.get("source", {})
    if source.get("language_probability") is not None:
        out_console.print(f"Source language detected: {source['language']} (probability {source['language_probability']:.2f})")
    for lang, r in report["languages"].items():
        if not r.get("previous_run"):
            _print_heard_back(lang, r)
        if r.get("lipsync") == "degraded":
            console.print(f"[yellow]! {lang}[/]: lip-sync degraded (coverage {r.get('lipsync_coverage', 0):.0%}); "
                          "see its qc.json", highlight=False)
    if failed:
        for lang, r in failed.items():
            console.print(f"[red]✗ {lang}[/]: {r.get('error')}", highlight=False)
        return 1
    return 0


def _print_heard_back(lang: str, result: dict) -> None:
    """The lines the back-transcription flagged (the summary table has the median CER): said vs heard."""
    flagged = result.get("flagged_lines") or []
    for line in flagged[:5]:
        out_console.print(f"[yellow]![/] {lang} line {line['index'] + 1} at {line['start']:.1f} s heard back with CER "
                          f"{line['cer']:.2f}: {escape(line['text'])} -> {escape(line['heard'] or '(nothing)')}",
                          highlight=False)
    if len(flagged) > 5:
        out_console.print(f"    ... {len(flagged) - 5} more in {lang}/qc.json", highlight=False)


@app.command()
def init(
    video: Annotated[Path, typer.Argument(help="the source video; the manifest is written beside it")],
    to: Annotated[str, typer.Option("--to", help="comma-separated target languages, e.g. es,de")],
    source_language: Annotated[str, typer.Option("--from", help="language spoken in the video")] = "en",
    project: Annotated[Optional[str], typer.Option(help="project name (default: from the video's file name)")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing manifest")] = False,
):
    """Write a commented starter manifest for VIDEO (VIDEO's folder/<project>.yaml) and print its path."""

    if not video.is_file():
        _fail_input(InputError(Problem(str(video), "VIDEO", "no such file")))
    try:
        text = manifest_text(Path(video.name), _languages(to) or [], source_language, project)
    except InputError as error:
        _fail_input(error)
    target = video.parent / f"{project or project_name(video)}.yaml"
    if target.exists() and not force:
        _fail_input(InputError(Problem(str(target), "", "already exists; use --force to overwrite")))
    write_text_atomic(target, text)
    out_console.print(str(target), highlight=False)


@app.command()
def prepare(
    manifest: Annotated[Path, typer.Argument(help="manifest file")],
    languages: Annotated[Optional[str], typer.Option(help="comma-separated subset of the targets, e.g. es,de")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: outputs.dir of the manifest)")] = None,
):
    """Proofread checkpoint: run up to translation and write a review sheet (CSV + XLSX) per language."""

    plan, _local = _plan(str(manifest), languages, None if out is None else str(out))

    def report(language: str, result: dict) -> None:
        out_console.print(
            f"{language}: {result['lines']} lines, {result['fits']} fit, {result['sped_up']} need a speed-up, "
            f"{result['overflow']} overflow, {result['glossary_missing']} glossary term(s) missing -> "
            f"{result['xlsx']} (and .csv)", highlight=False)
        for change in result["rewrites"]:  # the fit helper never edits silently: every suggestion is shown
            out_console.print(
                f"  {language} line {change['line']}: {change['before']!r} ({change['before_fit']}) -> suggested "
                f"{change['after']!r} ({change['after_fit']}); in the sheet's suggestion column", highlight=False)

    try:
        prepare_sheets(plan.manifest.path, _languages(languages), out, on_language=report)
    except InputError as error:
        _fail_input(error)
    except StageError as error:
        console.print(f"[bold red]prepare failed[/]: {escape(str(error))}")
        raise typer.Exit(1) from None
    out_console.print("Edit the sheets, then point each target at its sheet and run, e.g.\n"
                      "  translation: {from: file, path: <out>/review/<project>.<lang>.review.xlsx}", highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo media, manifest and outputs")] = Path("demo"),
    seconds: Annotated[float, typer.Option(min=4.0, max=600.0, help="length of the demo clip")] = 20.0,
    languages: Annotated[str, typer.Option(help="comma-separated target languages")] = "es,de,pt-BR",
    lipsync: Annotated[bool, typer.Option(help="also re-render the speaker's mouth for every language")] = False,
    ephemeral: Annotated[bool, typer.Option(help="use a throw-away Prefect server instead of the local one")] = False,
):
    """Make the demo media (a real talking-head clip, English voice-over, music bed) and dub it."""

    try:
        manifest = make_demo(out, seconds=seconds, languages=_languages(languages) or [], lipsync=lipsync)
    except ValueError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None
    out_console.print(f"Demo manifest: {manifest}")
    try:
        plan = make_plan(manifest)
    except InputError as error:
        _fail_input(error)
    raise typer.Exit(_run_flow(plan, manifest, None, None, ephemeral))


@app.command()
def schema(output: Annotated[Optional[Path], typer.Option("--output", "-o")] = None,
           qc: Annotated[bool, typer.Option("--qc", help="the schema of OUT/<lang>/qc.json instead")] = False):
    """Print (or write) the manifest's JSON Schema (or, with --qc, that of qc.json)."""

    text = json.dumps(qc_json_schema() if qc else manifest_json_schema(), indent=2) + "\n"
    if output:
        write_text_atomic(output, text)
    else:
        sys.stdout.write(text)



# ---------------------------------------------------------------- the local Prefect server

server_app = typer.Typer(no_args_is_help=True, help="The Prefect server `dubforge run` uses (PREFECT_API_URL, else the local one).")
app.add_typer(server_app, name="server")


@server_app.command("prune")
def server_prune(
    older_than: Annotated[float, typer.Option(min=0.0, help="delete finished flow runs that ended more than this many days ago")] = 14.0,
    flow: Annotated[Optional[str], typer.Option(help="only this flow's runs (e.g. dub-project)")] = None,
):
    """Delete old finished flow runs (and their task runs, logs, artifacts) to keep the server's database small."""

    from datetime import timedelta

    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = PREFECT_API_URL.value() or local_api()
    if not healthy(api, timeout=SLOW_HEALTH_S):
        console.print(f"[red]No Prefect server answers at {api}[/] (nothing to prune)", highlight=False)
        raise typer.Exit(1)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        deleted = prune_flow_runs(timedelta(days=older_than), flow)
    database = prefect_home() / "prefect.db"
    size = f"; the local database is {database.stat().st_size / 1e6:.0f} MB (SQLite reuses the space)" \
        if api == local_api() and database.is_file() else ""
    out_console.print(f"deleted {deleted} flow run{'s' if deleted != 1 else ''} older than {older_than:g} days from {api}{size}",
                      highlight=False)


# ---------------------------------------------------------------- team service (docs/service.md)

service_app = typer.Typer(no_args_is_help=True, help="Run dubforge as a team service (Prefect server, pools, workers).")
app.add_typer(service_app, name="service")


@service_app.command("up")
def service_up(
    postgres: Annotated[bool, typer.Option(help="PostgreSQL (own cluster in HOME/postgres) instead of SQLite")] = False,
    workers: Annotated[int, typer.Option(min=0, help="CPU workers (pool dubforge-cpu)")] = 2,
    gpu_workers: Annotated[int, typer.Option(min=0, help="GPU workers (pool dubforge-gpu, lip-sync projects)")] = 1,
    gpu_slots: Annotated[int, typer.Option(min=1, help="lip-sync renders at once (the 'gpu' tag limit)")] = 1,
    host: Annotated[str, typer.Option(help="address the server listens on; beyond loopback needs PREFECT_SERVER_API_AUTH_STRING")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="server port")] = 4200,
    pg_port: Annotated[int, typer.Option(help="PostgreSQL port (127.0.0.1 only)")] = 55432,
    home: Annotated[Optional[Path], typer.Option(help="state folder (default: $PREFECT_HOME/dubforge-service)")] = None,
    inbox: Annotated[Optional[Path], typer.Option(help="manifests inbox folder to scan on a schedule")] = None,
    inbox_cron: Annotated[str, typer.Option(help="cron schedule of the inbox scan")] = "*/5 * * * *",
    out_root: Annotated[Optional[Path], typer.Option(help="inbox runs write OUT_ROOT/<manifest name>/")] = None,
    zombie_after: Annotated[int, typer.Option(min=60, help="seconds without heartbeat before a run is marked Crashed (60 at least: two heartbeats)")] = 90,
):
    """Start the single-machine stack in the foreground; Ctrl-C stops all of it."""

    config = StackConfig(home=home or prefect_home() / "dubforge-service", host=host, port=port, postgres=postgres,
                         pg_port=pg_port, workers=workers, gpu_workers=gpu_workers, gpu_slots=gpu_slots,
                         inbox=inbox.absolute() if inbox else None, inbox_cron=inbox_cron,
                         out_root=out_root.absolute() if out_root else None, zombie_after_s=zombie_after)
    try:
        code = run_foreground(config, say=lambda message: out_console.print(message, highlight=False, markup=False))
    except RuntimeError as error:
        console.print(f"[red]{error}[/]", highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
def submit(
    manifest: Annotated[str, typer.Argument(help=MANIFEST_HELP)],
    languages: Annotated[Optional[str], typer.Option(help="comma-separated subset of the targets")] = None,
    out: Annotated[Optional[str], typer.Option(help="output folder or URL on shared storage (default: outputs.dir)")] = None,
    deployment: Annotated[Optional[str], typer.Option(help="default: dub-project/gpu with lip-sync, else dub-project/cpu")] = None,
    check: Annotated[bool, typer.Option(help="validate the manifest here first (needs the media)")] = True,
):
    """Create a flow run of the dub-project deployment on the server in PREFECT_API_URL; print its URL and id."""

    if not os.environ.get("PREFECT_API_URL"):
        console.print("[red]PREFECT_API_URL is not set[/]: point it at the team server, e.g. http://127.0.0.1:4200/api")
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="dubforge-submit-") as scratch:
        if check:
            _, local = _plan(manifest, languages, out, Path(scratch))
        elif is_url(manifest):
            try:
                local = stage_manifest(manifest, into=Path(scratch))
            except InputError as error:
                _fail_input(error)
        else:
            local = local_path(manifest)
        try:
            run_id = create_run(manifest, _languages(languages), out, deployment, local_copy=local)
        except Exception as error:  # unknown deployment, server unreachable, ...
            console.print(f"[red]Could not submit:[/] {error}", highlight=False)
            raise typer.Exit(1) from None
    print(f"Flow run: {ui_url_for(run_id)}")
    print(run_id)


@app.command()
def status(
    run_id: str,
    wait: Annotated[bool, typer.Option("--wait", help="block until the run ends; exit 0 only if it completed")] = False,
    poll: Annotated[float, typer.Option(help="seconds between polls with --wait")] = 1.0,
):
    """Show a flow run's state (and per-language results once it ended). Exit 0 completed, 1 not (yet)."""

    def show(current) -> None:
        detail = f" - {current.message}" if current.message and current.final else ""
        out_console.print(f"{current.name} [{current.deployment}]: {current.state}{detail}", highlight=False, markup=False,
                          soft_wrap=True)

    try:
        current = wait_for(run_id, poll=poll, on_change=show) if wait else read_status(run_id)
    except (ValueError, ObjectNotFound):  # not a run id, or no such run on this server: the input is wrong
        console.print(f"[red]No flow run {run_id!r}[/] on {PREFECT_API_URL.value() or 'the local server'}", highlight=False)
        raise typer.Exit(2) from None
    except Exception as exc:  # the API is unreachable or failing: not the user's input, so exit 1
        console.print(f"[red]Could not read flow run {run_id}:[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    if not wait:
        show(current)
    for lang, state in current.languages.items():
        why = f" - {current.errors[lang]}" if lang in current.errors else ""
        out_console.print(f"  {lang}: {state}{why}", highlight=False, markup=False, soft_wrap=True)
    out_console.print(current.url, highlight=False, markup=False)
    failed = [lang for lang, state in current.languages.items() if state not in ("completed", "skipped")]  # skipped: no speech
    raise typer.Exit(0 if current.completed and not failed else 1)


def main() -> None:
    # Offline machines: no telemetry from the Prefect servers this process starts (they inherit the environment).
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The imports' objects (Prefect, pydantic models, numpy) live for the whole process: out of the collector's
    # reach, a run spends about 7% less CPU on garbage collection (benchmarks/pipeline.py, one-line edit).
    gc.freeze()
    app()


# --- model registry (neural backends with user-supplied weights; see docs/neural.md) ---
models_app = typer.Typer(no_args_is_help=True, help="Register and check local model weights (models.yaml).")
app.add_typer(models_app, name="models")
_REGISTRY_HELP = "models.yaml to use (default: $DUBFORGE_MODELS, else ./models.yaml)"


@models_app.command("add")
def models_add(
    name: str,
    path: Path,
    backend: Annotated[Optional[str], typer.Option(help="demucs | whisper | wav2vec2 | pyannote | coqui | wav2lip (default: detected)")] = None,
    licence: Annotated[Optional[str], typer.Option(help="licence note (default: the backend's usual terms)")] = None,
    registry: Annotated[Optional[Path], typer.Option(help=_REGISTRY_HELP)] = None,
):
    """Register local weights under NAME (records backend, path, sha256 and licence note)."""

    target = model_store.registry_path(registry)
    try:
        entry = model_store.add(target, name, path, backend=backend, licence=licence)
    except InputError as error:
        _fail_input(error)
    out_console.print(f"{entry.name}: {entry.backend} {entry.path} sha256={entry.sha256[:16]}... -> {target}",
                      highlight=False, markup=False)


@models_app.command("check")
def models_check(registry: Annotated[Optional[Path], typer.Option(help=_REGISTRY_HELP)] = None):
    """List every registered model: backend, format, file, sha256, licence, and whether it loads (or why not)."""

    target = model_store.registry_path(registry)
    try:
        results = model_store.check(target)
    except InputError as error:
        _fail_input(error)
    if not results:
        console.print(f"no models registered in {target}", highlight=False)
        return
    out_console.print(f"models in {target}:", highlight=False)
    for r in results:
        e = r.entry
        sha = (r.sha256 + ("" if r.sha_ok else f" (recorded {e.sha256[:12]}...: changed)")) if r.exists else "-"
        status = ("[green]loads OK[/]: " if r.loads else "[red]does not load[/]: ") + escape(r.message)
        out_console.print(f"[bold]{escape(e.name)}[/]  backend={e.backend}  source={escape(e.source)}\n"
                          f"  file:    {escape(str(e.path))}\n  format:  {escape(model_store.KINDS[e.backend].format)}\n"
                          f"  sha256:  {sha}\n  licence: {escape(e.licence)}\n  {status}", highlight=False)
    if not all(r.loads and r.sha_ok for r in results):
        raise typer.Exit(1)
