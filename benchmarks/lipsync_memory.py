"""Peak memory of the lip-sync render + scorecard against source length, for one or two versions of the code.

    .venv/bin/python benchmarks/lipsync_memory.py --work DIR [--minutes 1 6] [--plain 1]
                                                  [--before OTHER_PYTHON OTHER_TREE] [--parallel] [--repeat 1] [--sample]

The sources are `benchmarks/long_source.py`'s (the 20 s demo looped to each length, 1280x720; ingest, align, voice
and the face track made once per length, by that script's stages). Each measurement runs the `lipsync` stage of
long_source.py in a fresh process, after removing everything the stage caches beside the face track (the mouth bank,
the x264 calibration, the scorecard's source detections, the landmarks' .npy copy), so every run builds them as a
first language does. With --before, the same stage of another tree (a checkout and a Python that imports it) is run
on the same sources (each version with its own copy of the face track), interleaved with this one, length by length,
or at the same time with --parallel: a same-session baseline.

Two heaps: a source under 10 minutes runs with glibc's dynamic mmap threshold ("plain", --plain lengths), one of 10
minutes or more (an hour) with the heap bounded (`media.audio.bound_heap`, "bound", --minutes lengths), as the flow and
long_source.py run them. Printed per code and run: peak RSS (VmHWM, MiB), CPU seconds (user + system), the growth in
MiB per minute between bounded lengths, and what an hour would peak at with the growth between the two longest bounded
lengths, as a ratio to the plain 1-minute run (the target: 1.10). --sample records RSS every 0.25 s (in --work).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 1.10
CACHES = ("mouth-bank-*", "encode-loss-*", "score-source-*", "*.points.npy", "*.pose.npy")


def prepare(work: Path, minutes: list[float], python: str) -> None:
    """The demo, each looped source and the stages the lip-sync stage reads (made once, reused)."""
    sys.path.insert(0, str(HERE))
    from long_source import make_source  # noqa: PLC0415 (a sibling script)

    from dubforge.demo.project import make_demo

    if not (work / "demo" / "demo-truth.json").is_file():
        make_demo(work / "demo", 20.0, ["es"])
    for m in minutes:
        folder = work / f"{m:g}min"
        make_source(work / "demo", m, 0.0, folder)
        for stage in ("ingest", "align", "voice", "track-face"):
            record = {"ingest": "media", "align": "transcript", "voice": "dub", "track-face": "face"}[stage]
            if (folder / f"{record}.json").is_file():
                continue
            began = time.perf_counter()
            subprocess.run([python, str(HERE / "long_source.py"), "--stage", stage, "--folder", str(folder)],
                           check=True, stdout=subprocess.DEVNULL)
            print(f"  prepared {folder.name} {stage} in {time.perf_counter() - began:.0f} s", flush=True)


def code_folder(folder: Path, code: str) -> Path:
    """A folder of `folder`'s records for one version of the code, with its own copy of the face track: what the
    stage caches beside the track (mouth bank, calibration, scorecard cache) is never shared between versions, so
    both can run at once (--parallel)."""
    mine = folder.with_name(f"{folder.name}-{code}")
    (mine / "track").mkdir(parents=True, exist_ok=True)
    for name in ("media.json", "dub.json", "transcript.json", "seconds"):
        if not (mine / name).exists():
            (mine / name).symlink_to(folder / name)
    face = json.loads((folder / "face.json").read_text(encoding="utf-8"))
    npz = Path(face["npz"])
    if not (mine / "track" / npz.name).is_file():
        shutil.copyfile(npz, mine / "track" / npz.name)
    face["npz"] = str(mine / "track" / npz.name)
    (mine / "face.json").write_text(json.dumps(face), encoding="utf-8")
    return mine


def clear_caches(folder: Path) -> None:
    for pattern in CACHES:
        for path in (folder / "track").glob(pattern):
            path.unlink()


# The stage with the heap bounded (`media.audio.bound_heap`), as the flow and long_source.py run a source of
# LONG_SOURCE_S (10 minutes) or more: how an hour runs, measured on shorter sources.
BOUNDED = ("import runpy, sys; from dubforge.media.audio import bound_heap; bound_heap(); sys.argv = sys.argv[1:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_lipsync(python: str, tree: Path, folder: Path, bounded: bool, sample: Path | None) -> dict:
    """One lipsync stage in a fresh process: peak (VmHWM, MiB), cpu s, wall s, its coverage line."""
    clear_caches(folder)
    (folder / "lipsync.es.mp4").unlink(missing_ok=True)
    started = time.perf_counter()
    stage = [str(tree / "benchmarks" / "long_source.py"), "--stage", "lipsync", "--folder", str(folder)]
    proc = subprocess.Popen([python, *(["-c", BOUNDED] if bounded else []), *stage], cwd=tree,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = None
    if sample is not None:
        sampler = subprocess.Popen([sys.executable, str(Path(__file__)), "--sample-pid", str(proc.pid),
                                    "--sample-out", str(sample)])
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if sampler is not None:
        sampler.wait()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"lipsync on {folder.name} with {tree} failed:\n{out[-3000:]}")
    lines = out.strip().splitlines()
    peak = int(lines[-1].split()[1]) / 1024
    note = next(line for line in reversed(lines) if line.startswith("lip-sync coverage"))
    return {"peak_mib": peak, "cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "note": note}


def sample_rss(pid: int, out: Path) -> None:
    """RSS of `pid` every 0.25 s until it exits (one 'seconds kib' line each)."""
    began = time.perf_counter()
    with open(out, "w") as handle:
        while True:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return
            rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
            if rss is None:  # a zombie: the stage has exited
                return
            handle.write(f"{time.perf_counter() - began:.2f} {rss}\n")
            handle.flush()
            time.sleep(0.25)


def report(results: dict[str, dict[str, list[dict]]], runs: list[tuple[str, float]]) -> bool:
    """Per code: each run's median peak and cpu; the growth between the bounded lengths; the ratio an hour (which
    runs bounded) would have, with the growth between the two longest bounded lengths, to the plain 1-minute run."""
    ok = True
    print(f"\n  {'code':<8}{'heap':>8}{'length':>8}{'peak MiB':>10}{'growth MiB/min':>16}{'cpu s':>8}  coverage")
    for code, by_run in results.items():
        peaks = {key: statistics.median(r["peak_mib"] for r in by_run[key]) for key in by_run}
        prev = None
        for regime, m in runs:
            key = f"{regime}:{m:g}"
            growth = "-"
            if regime == "bound" and prev is not None:
                growth = f"{(peaks[key] - peaks[f'bound:{prev:g}']) / (m - prev):.2f}"
            if regime == "bound":
                prev = m
            cpu = statistics.median(r["cpu"] for r in by_run[key])
            print(f"  {code:<8}{regime:>8}{m:>6g}mn{peaks[key]:>10.0f}{growth:>16}{cpu:>8.1f}  {by_run[key][0]['note']}")
        bound = sorted(m for regime, m in runs if regime == "bound")
        plain = sorted(m for regime, m in runs if regime == "plain")
        if len(bound) >= 2 and plain:
            a, b = bound[-2], bound[-1]
            rate = max((peaks[f"bound:{b:g}"] - peaks[f"bound:{a:g}"]) / (b - a), 0.0)
            hour = peaks[f"bound:{b:g}"] + rate * (60 - b)
            ratio = hour / peaks[f"plain:{plain[0]:g}"]
            ok &= ratio <= TARGET_RATIO
            print(f"  {code:<8}an hour (bounded), extrapolated with {rate:.2f} MiB/min ({a:g}->{b:g} mn): {hour:.0f} MiB, "
                  f"ratio {ratio:.3f} to the plain {plain[0]:g} mn ({'PASS' if ratio <= TARGET_RATIO else 'FAIL'} at "
                  f"{TARGET_RATIO})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="working folder (sources reused between runs)")
    parser.add_argument("--minutes", type=float, nargs="*", default=[1.0, 6.0],
                        help="lengths run with the heap bounded, as an hour runs (default 1 6)")
    parser.add_argument("--plain", type=float, nargs="*", default=[1.0],
                        help="lengths run as a source under 10 minutes runs: glibc's dynamic heap (default 1)")
    parser.add_argument("--before", nargs=2, metavar=("PYTHON", "TREE"), help="another checkout to compare with")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--parallel", action="store_true",
                        help="run the two versions at the same time (peaks are per process; CPU seconds less steady)")
    parser.add_argument("--sample", action="store_true", help="record RSS every 0.25 s per run (in --work)")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sample-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sample-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sample_pid:
        sample_rss(args.sample_pid, args.sample_out)
        return 0
    if args.work is None:
        parser.error("--work is required")
    work = args.work.absolute()
    runs = [("plain", m) for m in sorted(args.plain)] + [("bound", m) for m in sorted(args.minutes)]
    if args.prepare_only:
        prepare(work, sorted({m for _, m in runs}), sys.executable)
        return 0
    codes = {"after": (sys.executable, HERE.parent)}
    if args.before:
        codes = {"before": (args.before[0], Path(args.before[1]).absolute()), **codes}
    print(f"lip-sync render + scorecard, 1280x720, runs {runs}; load average {os.getloadavg()}", flush=True)
    results: dict[str, dict[str, list[dict]]] = {code: {f"{r}:{m:g}": [] for r, m in runs} for code in codes}
    for k in range(args.repeat):
        for regime, m in runs:
            prepare(work, [m], sys.executable)  # each length when first needed

            def one(code: str, regime: str = regime, m: float = m, k: int = k) -> None:
                python, tree = codes[code]
                sample = work / f"rss-{code}-{regime}-{m:g}min-{k}.txt" if args.sample else None
                r = run_lipsync(python, tree, code_folder(work / f"{m:g}min", code), regime == "bound", sample)
                results[code][f"{regime}:{m:g}"].append(r)
                print(f"  {code:<7}{regime:>6}{m:>5g} min: peak {r['peak_mib']:.0f} MiB, cpu {r['cpu']:.1f} s, wall "
                      f"{r['wall']:.0f} s, load {os.getloadavg()[0]:.2f}; {r['note']}", flush=True)

            if args.parallel:
                with ThreadPoolExecutor(len(codes)) as pool:
                    list(pool.map(one, codes))
            else:
                for code in codes:
                    one(code)
    ok = report(results, runs)
    print(f"  load average now {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
