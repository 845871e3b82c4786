"""`dubforge` command line: a thin shell over `dubforge.plan` and the `dub-project` flow.

Exit codes: 0 success, 1 some languages failed (the others are complete), 2 invalid input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dubforge.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Dub videos into many languages from a YAML manifest.")
console = Console(stderr=True)
out_console = Console()

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _fail_input(error: InputError) -> None:
    console.print(f"[bold red]Invalid input[/] ({len(error.problems)} problem{'s' if len(error.problems) != 1 else ''}):")
    for problem in error.problems:
        console.print(f"  - {problem}", highlight=False, markup=False)
    raise typer.Exit(2)


def _languages(value: str | None) -> list[str] | None:
    return [code.strip() for code in value.split(",") if code.strip()] if value else None


@app.command()
def validate(manifest: Path, languages: Annotated[Optional[str], typer.Option(help="comma-separated subset")] = None):
    """Check a manifest, its media and scripts; print the plan. Exit 2 listing every problem."""
    from dubforge.plan import make_plan
    from dubforge.summary import plan_summary

    try:
        plan = make_plan(manifest, _languages(languages))
    except InputError as error:
        _fail_input(error)
    out_console.print(plan_summary(plan))


@app.command()
def run(
    manifest: Path,
    languages: Annotated[Optional[str], typer.Option(help="comma-separated subset of the targets, e.g. es,de")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: outputs.dir of the manifest)")] = None,
    ephemeral: Annotated[bool, typer.Option(help="use a throw-away Prefect server instead of the local one")] = False,
):
    """Run the dub-project flow on a manifest, with a live view per language."""
    from dubforge.plan import make_plan

    try:
        plan = make_plan(manifest, _languages(languages), out)
    except InputError as error:
        _fail_input(error)
    raise typer.Exit(_run_flow(plan, manifest, _languages(languages), out, ephemeral))


def _run_flow(plan, manifest: Path, languages: list[str] | None, out: Path | None, ephemeral: bool) -> int:
    from dubforge.runner import run_with_display

    report = run_with_display(plan, manifest, languages, out, ephemeral, console)
    if report is None:
        return 1
    failed = {lang: r for lang, r in report["languages"].items() if r["status"] != "completed"}
    out_console.print(f"Report: {plan.out_dir / 'report.json'}")
    if failed:
        for lang, r in failed.items():
            console.print(f"[red]✗ {lang}[/]: {r.get('error')}", highlight=False)
        return 1
    return 0


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo media, manifest and outputs")] = Path("demo"),
    seconds: Annotated[float, typer.Option(min=4.0, max=600.0, help="length of the demo clip")] = 20.0,
    languages: Annotated[str, typer.Option(help="comma-separated target languages")] = "es,de,pt-BR",
    ephemeral: Annotated[bool, typer.Option(help="use a throw-away Prefect server instead of the local one")] = False,
):
    """Make the demo media (a real talking-head clip, English voice-over, music bed) and dub it."""
    from dubforge.demo import make_demo
    from dubforge.plan import make_plan

    try:
        manifest = make_demo(out, seconds=seconds, languages=_languages(languages))
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
def schema(output: Annotated[Optional[Path], typer.Option("--output", "-o")] = None):
    """Print (or write) the manifest's JSON Schema."""
    from dubforge.manifest import manifest_json_schema

    text = json.dumps(manifest_json_schema(), indent=2) + "\n"
    if output:
        from dubforge.files import write_text_atomic

        write_text_atomic(output, text)
    else:
        sys.stdout.write(text)


def main() -> None:
    app()
