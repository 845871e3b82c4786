"""End-to-end pipeline benchmark on the demo project (`dubforge demo` media).

    .venv/bin/python benchmarks/pipeline.py [--seconds 60] [--languages es,de,pt-BR] [--extra fr] [--repeat N]

Measures, per repetition: a bare ffmpeg remux of the demo clip (`-c copy`, the floor for any tool that
reads and writes the file); `dubforge run demo.yaml --out DIR` on a fresh output folder (cold); the same
run again unchanged (everything cached); then the run with one more language added; then one line of the es
script edited and `run --languages es` (the review loop's "fix one line"). Each run's wall time
and peak memory (the largest process of the run, from wait4) are printed with per-stage seconds from
OUT/report.json, the real-time factor (wall / clip length), the ratio to the remux, and the targets:
60 s clip, 3 languages, lip-sync off: cold run < 40 s; unchanged rerun < 8 s; the added language costs
no more than one language's share of the cold run; the one-line edit costs at most 25% of the cold run.
Medians over --repeat. --json FILE saves the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dubforge.demo.project import FPS, demo_languages, frame_count, make_demo  # noqa: E402

TARGET_COLD = 40.0
TARGET_RERUN = 8.0
TARGET_EDIT_SHARE = 0.25  # of the cold run


def timed(command: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> dict:
    """Run `command`; wall seconds, CPU seconds (it and the children it waited for: contention-robust),
    peak RSS (MiB) of its largest process, exit status."""
    sink = open(log, "wb") if log else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            sink.close()
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu, "peak_mib": usage.ru_maxrss / 1024, "rc": proc.returncode}


def remux_baseline(video: Path, work: Path) -> dict:
    import imageio_ffmpeg

    out = work / "remux.mp4"
    result = timed([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-map", "0", "-c", "copy", str(out)])
    if result["rc"] != 0 or not out.is_file():
        raise SystemExit(f"ffmpeg remux of {video} failed (exit {result['rc']})")
    return result


def dubforge_command() -> list[str]:
    script = Path(sys.executable).with_name("dubforge")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from dubforge.cli import main; sys.exit(main())"]


def pipeline_run(manifest: Path, out: Path, env: dict[str, str], label: str, *options: str) -> dict:
    log = out.parent / f"{out.name}.{label}.log"
    result = timed([*dubforge_command(), "run", str(manifest), "--out", str(out), *options], env=env, log=log)
    report = out / "report.json"
    result["report"] = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None
    result["log"] = str(log)
    if result["rc"] != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        print(f"\n{label}: `dubforge run` exited {result['rc']}; log {log}:\n{tail}", file=sys.stderr)
    return result


def stage_seconds(entry: object) -> float | None:
    """A report stage entry: seconds, or {"state": ..., "seconds": ...}."""
    value = entry.get("seconds") if isinstance(entry, dict) else entry
    return float(value) if isinstance(value, (int, float)) else None


def language_share(report: dict | None, wall: float) -> float:
    """One language's share of a run: mean of the per-language stage sums (else wall / languages)."""
    langs = (report or {}).get("languages") or {}
    sums = [sum(stage_seconds(x) or 0.0 for x in v.get("stages", {}).values()) for v in langs.values()]
    if sums and any(sums):
        return statistics.mean(sums)
    return wall / max(1, len(langs))


def one_repetition(manifest: Path, extra_manifest: Path, work: Path, index: int) -> dict:
    rep = work / f"rep{index}"
    shutil.rmtree(rep, ignore_errors=True)
    rep.mkdir(parents=True)
    env = dict(os.environ, XDG_CACHE_HOME=str(rep / "cache"))  # a cold user cache as well as a fresh --out
    out = rep / "out"
    cold = pipeline_run(manifest, out, env, "cold")
    rerun = pipeline_run(manifest, out, env, "rerun")
    added = pipeline_run(extra_manifest, out, env, "added")
    result = {"cold": cold, "rerun": rerun, "added": added}
    script = manifest.parent / "scripts" / "demo.es.srt"
    if script.is_file():  # the review loop: one line of the es translation edited, then `run --languages es`
        original = script.read_text(encoding="utf-8")
        tts = out / ".dubforge" / "work" / "voice" / "tts-es"
        before = set(tts.glob("*.wav"))
        lines = original.split("\n\n")
        cue = lines[1].split("\n")
        lines[1] = "\n".join([*cue[:2], "Una frase corregida por el equipo."])
        script.write_text("\n\n".join(lines), encoding="utf-8")
        try:
            result["edit"] = pipeline_run(extra_manifest, out, env, "edit", "--languages", "es")
        finally:
            script.write_text(original, encoding="utf-8")
        result["edit"]["clips_synthesised"] = len(set(tts.glob("*.wav")) - before)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def stage_table(report: dict | None) -> list[str]:
    if not report:
        return ["  (no report.json)"]
    shared = report.get("stages") or {}
    langs = report.get("languages") or {}
    names: list[str] = list(shared)
    for entry in langs.values():
        names += [n for n in entry.get("stages", {}) if n not in names]
    head = f"  {'stage':<16}{'shared':>9}" + "".join(f"{lang:>9}" for lang in langs)
    rows = [head]
    for name in names:
        cells = [shared.get(name)] + [entry.get("stages", {}).get(name) for entry in langs.values()]
        rows.append(f"  {name:<16}" + "".join(_cell(c) for c in cells))
    statuses = "  status: " + ", ".join(f"{lang} {entry.get('status', '?')}" for lang, entry in langs.items())
    total = report.get("total_seconds")
    return rows + ["  (c = cached)", statuses + (f"; total_seconds {total:.2f}" if isinstance(total, (int, float)) else "")]


def median_report(reports: list[dict | None]) -> dict | None:
    """A report whose stage seconds are the medians over repetitions (states and statuses from the first)."""
    reports = [r for r in reports if r]
    if not reports:
        return None

    def merged(stages_of: list[dict]) -> dict:
        out: dict = {}
        for name, entry in stages_of[0].items():
            values = [stage_seconds(s.get(name)) for s in stages_of]
            seconds = median([v for v in values if v is not None])
            out[name] = {"state": entry.get("state") if isinstance(entry, dict) else None, "seconds": seconds}
        return out

    first = reports[0]
    langs = {
        lang: {**entry, "stages": merged([(r.get("languages") or {}).get(lang, {}).get("stages", {}) for r in reports])}
        for lang, entry in (first.get("languages") or {}).items()
    }
    totals = [r["total_seconds"] for r in reports if isinstance(r.get("total_seconds"), (int, float))]
    return {**first, "stages": merged([r.get("stages") or {} for r in reports]), "languages": langs,
            "total_seconds": median(totals) if totals else None}


def _cell(entry: object) -> str:
    seconds = stage_seconds(entry)
    if seconds is None:
        return f"{'':>9}"
    cached = isinstance(entry, dict) and str(entry.get("state", "")).lower() == "cached"
    return f"{seconds:>8.2f}{'c' if cached else ' '}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="demo clip length (default 60)")
    parser.add_argument("--languages", default="es,de,pt-BR", help="comma-separated target languages (default es,de,pt-BR)")
    parser.add_argument("--extra", default="fr", help="the language added in the last run (default fr)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions; medians are reported")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--baseline-only", action="store_true", help="make the demo and time the remux only")
    args = parser.parse_args(argv)
    try:
        langs = demo_languages([x.strip() for x in args.languages.split(",") if x.strip()])
        (extra,) = demo_languages([args.extra])
    except ValueError as exc:
        parser.error(str(exc))
    if extra in langs:
        parser.error(f"--extra {extra} is already in --languages")
    args.extra = extra

    temp = None if args.work else tempfile.TemporaryDirectory(prefix="dubforge-bench-")
    work = (args.work or Path(temp.name)).absolute()
    work.mkdir(parents=True, exist_ok=True)
    try:
        demo_dir = work / f"demo-{args.seconds:g}s"
        started = time.perf_counter()
        extra_manifest = make_demo(demo_dir, args.seconds, [*langs, args.extra])
        extra_manifest = extra_manifest.replace(demo_dir / f"demo.plus-{args.extra}.yaml")
        manifest = make_demo(demo_dir, args.seconds, langs)
        demo_seconds = time.perf_counter() - started
        clip = float(frame_count(args.seconds) / FPS)
        video = demo_dir / "media" / "demo.mp4"

        baselines = [remux_baseline(video, work)["wall"] for _ in range(max(1, args.repeat))]
        remux = median(baselines)
        print(f"dubforge pipeline benchmark: {clip:.2f} s clip ({frame_count(args.seconds)} frames, 1280x720), "
              f"languages {', '.join(langs)} (+{args.extra}), lip-sync off, repeat {args.repeat}")
        print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}; demo media ready in {demo_seconds:.1f} s")
        print(f"baseline: ffmpeg remux (-c copy) {remux:.3f} s")
        results: dict = {"seconds": clip, "languages": langs, "extra": args.extra, "remux_seconds": remux, "runs": []}
        if args.baseline_only:
            return _finish(results, args.json)
        if importlib.util.find_spec("dubforge.cli") is None:
            print("dubforge.cli is not importable: `dubforge run` cannot be benchmarked yet", file=sys.stderr)
            _finish(results, args.json)
            return 2

        reps = [one_repetition(manifest, extra_manifest, work, i) for i in range(max(1, args.repeat))]
        results["runs"] = reps
        print(f"\n  {'run':<24}{'wall s':>9}{'cpu s':>8}{'flow s':>9}{'RTF':>8}{'peak MiB':>10}{'x remux':>9}{'exit':>6}")
        walls: dict[str, float] = {}
        runs = [("cold", f"cold, {len(langs)} languages"), ("rerun", "unchanged rerun"),
                ("added", f"+{args.extra} ({len(langs) + 1} languages)")]
        if all("edit" in r for r in reps):
            runs.append(("edit", "1 line edited, es only"))
        for key, label in runs:
            wall = median([r[key]["wall"] for r in reps])
            peak = median([r[key]["peak_mib"] for r in reps])
            cpu = median([r[key].get("cpu", float("nan")) for r in reps])
            flow = median([float((r[key]["report"] or {}).get("total_seconds", "nan")) for r in reps])
            rcs = sorted({r[key]["rc"] for r in reps})
            walls[key] = wall
            print(f"  {label:<24}{wall:>9.2f}{cpu:>8.2f}{flow:>9.2f}{wall / clip:>8.3f}{peak:>10.0f}{wall / remux:>9.0f}"
                  f"{','.join(map(str, rcs)):>6}")
        print("  (wall: the whole `dubforge run` process; cpu: its user+system seconds, which other load on the machine"
              " barely changes; flow: report.json total_seconds; peak: largest process)")
        print("\nstages of the cold run (seconds, from report.json):")
        print("\n".join(stage_table(median_report([r["cold"]["report"] for r in reps]))))
        print(f"\nstages of the +{args.extra} run:")
        print("\n".join(stage_table(median_report([r["added"]["report"] for r in reps]))))
        if "edit" in walls:
            print(f"\nstages of the one-line edit run (audio clips synthesised again: "
                  f"{median([r['edit']['clips_synthesised'] for r in reps]):.0f}):")
            print("\n".join(stage_table(median_report([r["edit"]["report"] for r in reps]))))

        share = median([language_share(r["cold"]["report"], r["cold"]["wall"]) for r in reps])
        added_cost = walls["added"] - walls["rerun"]
        ok = all(r[k]["rc"] == 0 for r in reps for k in r)
        checks = [
            (f"cold run < {TARGET_COLD:g} s (60 s clip, 3 languages)", walls["cold"], TARGET_COLD, walls["cold"] < TARGET_COLD),
            (f"unchanged rerun < {TARGET_RERUN:g} s", walls["rerun"], TARGET_RERUN, walls["rerun"] < TARGET_RERUN),
            ("added language <= one language's share", added_cost, share, added_cost <= share),
        ]
        if "edit" in walls:
            limit = TARGET_EDIT_SHARE * walls["cold"]
            checks.append((f"one-line edit <= {TARGET_EDIT_SHARE:.0%} of the cold run", walls["edit"], limit,
                           walls["edit"] <= limit))
        print("\ntargets:" + ("" if args.seconds == 60 and len(langs) == 3 else " (defined for a 60 s clip and 3 languages)"))
        for name, value, limit, passed in checks:
            print(f"  {name:<44}{value:>8.2f} s  (limit {limit:.2f} s)  {'PASS' if passed and ok else 'FAIL'}")
        results["targets"] = [{"name": n, "value": v, "limit": lim, "pass": p and ok} for n, v, lim, p in checks]
        missed = not all(t["pass"] for t in results["targets"])
        return _finish(results, args.json, 1 if not ok or (args.check and missed) else 0)
    finally:
        if temp:
            temp.cleanup()


def _finish(results: dict, path: Path | None, code: int = 0) -> int:
    if path:
        from dubforge.core.files import write_json_atomic

        write_json_atomic(path, results)
    return code


if __name__ == "__main__":
    sys.exit(main())
