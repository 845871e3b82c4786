"""Lip-sync render speed and memory at 1280x720, against a bare decode + x264 encode of the same clip.

    .venv/bin/python benchmarks/lipsync_bench.py [--frames 240] [--cores 2] [--repeat 3]

Runs the lip-sync stage for 3 languages (track once; render and score each; the first language builds the
mouth bank and the scorecard's source-side cache) and 3 bare transcodes, interleaved `--repeat` times so both
see the same load, and prints medians: wall and CPU (user+sys, all threads) seconds per step, the stage over
the bare transcodes in wall and in CPU seconds, the scorecard, and peak memory of a render at N and 3N frames
(each in its own process) to show it does not grow with length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SENTENCES = ("Maybe Bob prefers fluffy purple muffins.", "We will move the boxes before the show.",
             "Pam brought maps to the bay by noon.", "Five brave volunteers fixed the fence.")


def make_inputs(work: Path, frames: int) -> tuple[Path, list]:
    from dubforge.core.contracts import Phoneme
    from dubforge.lipsync.testmedia import carphone_frames, write_clip
    from tests.media import speak_english

    video = work / f"src-{frames}.mp4"
    if not video.exists():
        write_clip(video, carphone_frames(frames=frames), fps=Fraction(30000, 1001))
    seconds = frames * 1001 / 30000
    phonemes, offset, k = [], 0.0, 0
    while offset < seconds - 1.0:
        spoken = speak_english(SENTENCES[k % len(SENTENCES)], work / "speech.wav", lead=0.3, tail=0.3)
        phonemes += [Phoneme(symbol=p, start=s + offset, end=e + offset)
                     for w in spoken.words for p, s, e in w.phonemes if s + offset < seconds]
        offset += spoken.duration
        k += 1
    return video, phonemes


def bare_transcode(video: Path, out: Path) -> float:
    from dubforge.lipsync.video import H264Writer, frames, probe, yuv_planes

    start = time.perf_counter()
    with H264Writer(out, probe(video)) as writer:
        for frame in frames(video):
            writer.write(yuv_planes(frame)[0], frame.pts)
    return time.perf_counter() - start


def _cpu() -> float:
    """User + system seconds of this process, all its threads (x264's and mediapipe's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, *args, **kwargs) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, _cpu() - cpu


def render_once(video: Path, work: Path, phonemes: list, out: Path) -> dict:
    """One render in a fresh process (peak memory)."""
    from dubforge.tasks.lipsync import render_lipsync, track_face

    track = track_face(video, work)
    result = render_lipsync(video, track, phonemes, [], out)
    return {"frames": result.frames_rendered + result.frames_passed_through,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def stage(video: Path, work: Path, phonemes: list, languages: int = 3) -> dict:
    """The lip-sync stage as the flow runs it for `languages` languages: track once, then render and score
    each (the first language builds the mouth bank and the scorecard's source-side cache). Wall and CPU
    seconds per step."""
    from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face

    track, wall, cpu = timed(track_face, video, work)
    steps = {"track": (wall, cpu)}
    card: dict = {}
    for k in range(languages):
        out = work / f"out-{k}.mp4"
        _, wall, cpu = timed(render_lipsync, video, track, phonemes, [], out)
        steps[f"render{k}"] = (wall, cpu)
        card, wall, cpu = timed(score_lipsync, out, video, track, phonemes)
        steps[f"score{k}"] = (wall, cpu)
    return {"steps": steps, "scorecard": card}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dubforge-lipsync-bench")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and args.cores:
        cpus = sorted(os.sched_getaffinity(0))[: args.cores]
        os.sched_setaffinity(0, cpus)
    args.work.mkdir(parents=True, exist_ok=True)
    video, phonemes = make_inputs(args.work, args.frames)
    if args.child:  # one render in a fresh process: its peak memory
        print(json.dumps(render_once(video, args.work / "w", phonemes, args.work / f"child-{args.frames}.mp4")))
        return

    from dubforge.lipsync.detect import FaceMesh

    FaceMesh(1).close()  # imports (mediapipe's graph) once, outside the timings
    load_before = os.getloadavg()[0]
    bares, stages = [], []
    for r in range(args.repeat):  # interleaved, so both see the same load
        runs_ = [timed(bare_transcode, video, args.work / "bare.mp4")[1:] for _ in range(3)]
        bares.append((sum(w for w, _ in runs_), sum(c for _, c in runs_)))
        stages.append(stage(video, args.work / f"stage-{r}-{time.time_ns()}", phonemes))

    def med(values) -> float:
        return float(statistics.median(values))

    def step(name: str, i: int) -> float:  # i: 0 wall, 1 cpu
        return med(s["steps"][name][i] for s in stages)

    bare_wall, bare_cpu = med(b[0] for b in bares) / 3, med(b[1] for b in bares) / 3
    total = [sum(v[0] for v in s["steps"].values()) for s in stages]
    total_cpu = [sum(v[1] for v in s["steps"].values()) for s in stages]
    n = args.frames
    report = {
        "frames": n, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "repeat": args.repeat, "load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0],
        "bare_s": bare_wall, "bare_cpu_s": bare_cpu, "bare_decode_encode_fps": n / bare_wall,
        "track_s": step("track", 0), "track_cpu_s": step("track", 1),
        "render_s_first_language": step("render0", 0), "render_cpu_s_first_language": step("render0", 1),
        "render_s_other_languages": step("render1", 0), "render_cpu_s_other_languages": step("render1", 1),
        "render_over_bare_warm": step("render1", 0) / bare_wall,
        "render_over_bare_cold": step("render0", 0) / bare_wall,
        "score_s_first_language": step("score0", 0), "score_cpu_s_first_language": step("score0", 1),
        "score_s_other_languages": step("score1", 0), "score_cpu_s_other_languages": step("score1", 1),
        # The whole lip-sync stage for 3 languages (track once, bank once, render + score each) vs 3 bare
        # transcodes: medians over the repeats, in wall seconds and in CPU seconds.
        "stage_3_languages_over_3_bare": med(total) / (3 * bare_wall),
        "stage_3_languages_over_3_bare_cpu": med(total_cpu) / (3 * bare_cpu),
        "scorecard": {k: round(v, 3) if isinstance(v, float) else v for k, v in stages[-1]["scorecard"].items()},
    }
    for frames in (args.frames, 3 * args.frames):
        out = subprocess.run([sys.executable, __file__, "--child", "--frames", str(frames), "--cores", str(args.cores),
                              "--work", str(args.work)], capture_output=True, text=True, check=True)
        report[f"peak_rss_mb_{frames}_frames"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in report.items()}, indent=1))


if __name__ == "__main__":
    main()
