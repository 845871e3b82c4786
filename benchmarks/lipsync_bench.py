"""Lip-sync render speed and memory at 1280x720, against a bare decode + x264 encode of the same clip.

    .venv/bin/python benchmarks/lipsync_bench.py [--frames 240] [--cores 2]

Prints fps per language (warm: face track and mouth bank cached, as for every language after the
first), the ratio to decode+encode measured in the same run, the cold first-language cost, the whole lip-sync
stage for 3 languages (track, bank, render and score) over 3 bare transcodes, the scorecard's time (first language, then others: the source side is cached) and its numbers, and peak
memory of a render at N and 3N frames (each in its own process) to show it does not grow with length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def render_once(video: Path, work: Path, phonemes: list, out: Path, score: bool = False) -> dict:
    from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face

    t0 = time.perf_counter()
    track = track_face(video, work)
    t1 = time.perf_counter()
    result = render_lipsync(video, track, phonemes, [], out)
    t2 = time.perf_counter()
    report = {"track_s": t1 - t0, "render_s": t2 - t1, "frames": result.frames_rendered + result.frames_passed_through,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if score:  # the scorecard (its source-side detection is cached per source after the first language)
        card = score_lipsync(out, video, track, phonemes)
        report.update(score_s=time.perf_counter() - t2, scorecard=card)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--cores", type=int, default=2)
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

    cold = render_once(video, args.work / f"cold-{time.time_ns()}", phonemes, args.work / "out-cold.mp4", score=True)
    bare = min(bare_transcode(video, args.work / "bare.mp4") for _ in range(2))
    warm = min((render_once(video, args.work / "w", phonemes, args.work / "out.mp4", score=True) for _ in range(2)),
               key=lambda r: r["render_s"])
    n = warm["frames"]
    report = {
        "frames": n, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "bare_decode_encode_fps": n / bare,
        "render_fps_warm": n / warm["render_s"],
        "render_over_bare_warm": warm["render_s"] / bare,
        "render_fps_cold_first_language": n / cold["render_s"],
        "render_over_bare_cold": cold["render_s"] / bare,
        "track_once_fps": n / cold["track_s"],
        "score_s_first_language": cold["score_s"],
        "score_s_other_languages": warm["score_s"],
        # The whole lip-sync stage for 3 languages (track once, bank once, render + score each) vs 3 bare transcodes.
        "stage_3_languages_over_3_bare": (cold["track_s"] + cold["render_s"] + cold["score_s"]
                                          + 2 * (warm["render_s"] + warm["score_s"])) / (3 * bare),
        "scorecard": {k: round(v, 3) if isinstance(v, float) else v for k, v in warm["scorecard"].items()},
    }
    for frames in (args.frames, 3 * args.frames):
        out = subprocess.run([sys.executable, __file__, "--child", "--frames", str(frames), "--cores", str(args.cores),
                              "--work", str(args.work)], capture_output=True, text=True, check=True)
        report[f"peak_rss_mb_{frames}_frames"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in report.items()}, indent=1))


if __name__ == "__main__":
    main()
