"""Peak memory of the lip-sync render + scorecard against source length, for one or two versions of the code.

    .venv/bin/python benchmarks/lipsync_memory.py --work DIR [--minutes 1 2 6] [--before OTHER_PYTHON OTHER_TREE]
                                                  [--repeat 1] [--sample]

The sources are `benchmarks/long_source.py`'s (the 20 s demo looped to each length, 1280x720; ingest, align, voice
and the face track made once per length, by that script's stages). Each measurement runs the `lipsync` stage of
long_source.py in a fresh process, after removing everything the stage caches beside the face track (the mouth bank,
the x264 calibration, the scorecard's source detections, the landmarks' .npy copy), so every run builds them as a
first language does. With --before, the same stage of another tree (a checkout and a Python that imports it) is run
on the same sources (each version with its own copy of the face track), interleaved with this one, length by length,
or at the same time with --parallel: a same-session baseline.

Printed per code and length: peak RSS (VmHWM, MiB), CPU seconds (user + system), the growth in MiB per minute
between lengths, the ratio to the shortest length, and the ratio an hour would have with the growth measured
between the two longest lengths. --sample also records RSS every 0.25 s with the stage's phase (render, scorecard).
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


def run_lipsync(python: str, tree: Path, folder: Path, sample: Path | None) -> dict:
    """One lipsync stage in a fresh process: peak (VmHWM, MiB), cpu s, wall s, its coverage line."""
    clear_caches(folder)
    (folder / "lipsync.es.mp4").unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen([python, str(tree / "benchmarks" / "long_source.py"), "--stage", "lipsync",
                             "--folder", str(folder)], cwd=tree, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
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


def report(results: dict[str, dict[float, list[dict]]], minutes: list[float]) -> bool:
    ok = True
    print(f"\n  {'code':<8}{'length':>8}{'peak MiB':>10}{'growth MiB/min':>16}{'ratio':>7}{'cpu s':>8}  coverage")
    for code, by_length in results.items():
        peaks = {m: statistics.median(r["peak_mib"] for r in by_length[m]) for m in minutes}
        cpus = {m: statistics.median(r["cpu"] for r in by_length[m]) for m in minutes}
        prev = None
        for m in minutes:
            growth = f"{(peaks[m] - peaks[prev]) / (m - prev):.1f}" if prev is not None else "-"
            print(f"  {code:<8}{m:>6g}mn{peaks[m]:>10.0f}{growth:>16}{peaks[m] / peaks[minutes[0]]:>7.3f}"
                  f"{cpus[m]:>8.1f}  {by_length[m][0]['note']}")
            prev = m
        if len(minutes) >= 2:
            a, b = minutes[-2], minutes[-1]
            rate = max((peaks[b] - peaks[a]) / (b - a), 0.0)
            hour = (peaks[b] + rate * (60 - b)) / peaks[minutes[0]]
            ok &= hour <= TARGET_RATIO
            print(f"  {code:<8}an hour, extrapolated with {rate:.2f} MiB/min ({a:g}->{b:g} mn): ratio {hour:.3f} "
                  f"to {minutes[0]:g} mn ({'PASS' if hour <= TARGET_RATIO else 'FAIL'} at {TARGET_RATIO})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="working folder (sources reused between runs)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 2.0, 6.0])
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
    minutes = sorted(args.minutes)
    prepare(work, minutes, sys.executable)
    if args.prepare_only:
        return 0
    codes = {"after": (sys.executable, HERE.parent)}
    if args.before:
        codes = {"before": (args.before[0], Path(args.before[1]).absolute()), **codes}
    print(f"lip-sync render + scorecard, 1280x720, lengths {minutes} min; load average {os.getloadavg()}", flush=True)
    results: dict[str, dict[float, list[dict]]] = {code: {m: [] for m in minutes} for code in codes}
    for k in range(args.repeat):
        for m in minutes:
            def one(code: str, m: float = m, k: int = k) -> None:
                python, tree = codes[code]
                sample = work / f"rss-{code}-{m:g}min-{k}.txt" if args.sample else None
                r = run_lipsync(python, tree, code_folder(work / f"{m:g}min", code), sample)
                results[code][m].append(r)
                print(f"  {code:<7}{m:>5g} min: peak {r['peak_mib']:.0f} MiB, cpu {r['cpu']:.1f} s, wall "
                      f"{r['wall']:.0f} s, load {os.getloadavg()[0]:.2f}; {r['note']}", flush=True)

            if args.parallel:
                with ThreadPoolExecutor(len(codes)) as pool:
                    list(pool.map(one, codes))
            else:
                for code in codes:
                    one(code)
    ok = report(results, minutes)
    print(f"  load average now {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({str(c): {str(m): v for m, v in r.items()} for c, r in results.items()},
                                        indent=2), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
