"""Lip-sync robustness matrix: every case of tests/lipsync_cases.py (the tests run a fast subset), graded by
the independent scorecard, against the issue's thresholds.

    .venv/bin/python benchmarks/lipsync_robustness.py [--cases a,b,...] [--crf 12]

Prints one row per case: coverage (all scored frames; outside the occluder), closure, correlation within one
frame and the best lag, frames in/out, timestamp error, rotation in/out, identities, shots, decoy PSNR,
seconds; then which cases meet coverage >= 0.95, closure >= 0.9 / correlation >= 0.6 (the tests' bar) and
closure >= 0.85 / correlation >= 0.5 (the held-out targets)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from tests.lipsync_cases import CASES, dub, run

    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--crf", type=int, default=12)
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        phonemes = dub(work)
        head = f"{'case':16} {'cov':>5} {'cov*':>5} {'clos':>5} {'corr':>5} {'lag':>3} {'frames':>9} {'ts_err':>7} " \
               f"{'rot':>7} {'ids':>3} {'shots':>5} {'decoy':>6} {'sec':>5}"
        print(head)
        rows = {}
        for name in names:
            start = time.perf_counter()
            f = run(CASES[name], work / name, phonemes, crf=args.crf)
            f["seconds"] = time.perf_counter() - start
            rows[name] = f

            def num(v, fmt="5.2f"):
                return format(v, fmt) if isinstance(v, (int, float)) else f"{'-':>5}"

            print(f"{name:16} {num(f['coverage'])} {num(f['coverage_outside_occlusion'])} {num(f['closure'])} "
                  f"{num(f['correlation'])} {f['lag_frames'] if f['lag_frames'] is not None else '-':>3} "
                  f"{f['frames'][0]:>4}/{f['frames'][1]:<4} {f['timestamps_max_error']:7.1e} "
                  f"{f['rotation'][0]:>3}/{f['rotation'][1]:<3} {f['faces_seen']:>3} {f['shots']:>5} "
                  f"{num(f.get('decoy_psnr_db'), '6.1f') if 'decoy_psnr_db' in f else '     -'} {f['seconds']:5.1f}",
                  flush=True)

        def ok(f, closure, corr):
            return (f["coverage_outside_occlusion"] >= 0.95 and (f["closure"] or 0) >= closure
                    and (f["correlation"] or 0) >= corr and f["frames"][0] == f["frames"][1]
                    and f["rotation"][0] == f["rotation"][1] and f.get("decoy_psnr_db", 99) >= 40)

        for label, closure, corr in (("tests' bar (0.9 / 0.6)", 0.9, 0.6), ("held-out targets (0.85 / 0.5)", 0.85, 0.5)):
            missed = [n for n, f in rows.items() if not ok(f, closure, corr)]
            print(f"{label}: {len(rows) - len(missed)}/{len(rows)} cases meet it"
                  + (f"; not: {', '.join(missed)}" if missed else ""))
        print("(cov* = coverage outside the occluded frames; the occluded case's closure and correlation count the"
              " covered mouth as misses, so it is judged on coverage only by the tests)")


if __name__ == "__main__":
    main()
