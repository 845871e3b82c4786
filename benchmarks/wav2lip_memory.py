"""Peak memory of the wav2lip render against the length of the source (issue 12: memory flat in length).

    .venv-neural/bin/python benchmarks/wav2lip_memory.py [--minutes 1 4] [--fps 3] [--code FILE] [--work DIR]

The source is the carphone talking head (352x288) looped back and forth to each length at --fps frames a second,
with a 48 kHz stereo float dub WAV of the same length (the dialogue WAV's format; tone and noise: the generator
has random weights in the published layout, which is fine for memory, not for looks). The face track is made
once per length; each render runs in a fresh process. Printed per length: the render process's peak RSS (VmHWM,
MiB), CPU seconds (user+sys) and wall seconds, and the ratio to the first length. --code measures another
wav2lip.py (e.g. `git show REV:models/wav2lip.py > old.py`) for a before/after in the same run. The frame rate is
low because the generator costs about 0.25 CPU s a frame here: the audio grows with seconds, the landmarks with
frames.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def prepare(folder: Path, minutes: float, fps: int) -> None:
    from dubforge.lipsync.testmedia import carphone_frames, write_clip
    from dubforge.media.audio import wav_writer
    from dubforge.tasks.lipsync import track_face

    folder.mkdir(parents=True, exist_ok=True)
    src, wav = folder / "source.mp4", folder / "dub.wav"
    if not src.is_file():
        write_clip(src, carphone_frames(width=352, height=288, frames=int(minutes * 60 * fps)), fps=Fraction(fps))
    if not wav.is_file():
        rng = np.random.default_rng(0)
        with wav_writer(wav, 48_000, 2) as writer:
            for start in range(0, int(minutes * 60 * 48_000), 480_000):
                t = (start + np.arange(480_000)) / 48_000
                tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
                mono = (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
                writer.write(np.stack([mono, 0.7 * mono], axis=1))
    track = track_face(src, folder / "cache")
    (folder / "face.json").write_text(track.model_dump_json())


def render(folder: Path, checkpoint: Path, code: str | None) -> None:
    from dubforge.core import model_store
    from dubforge.lipsync.records import FaceTrack

    if code:
        spec = importlib.util.spec_from_file_location("wav2lip_under_test", code)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        from dubforge.models import wav2lip as module
    registry = folder.parent / "models.yaml"
    if not registry.is_file():
        model_store.add(registry, "wav2lip", checkpoint)
    track = FaceTrack.model_validate_json((folder / "face.json").read_text())
    result = module.Wav2LipRenderer(registry=registry).render(folder / "source.mp4", track, [], [],
                                                              folder / "out.mp4", audio=folder / "dub.wav")
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mib": hwm / 1024, "rendered": result.frames_rendered, "frames": track.frame_count}))


def checkpoint_file(work: Path) -> Path:
    import torch

    from dubforge.models.wav2lip import build_network

    path = work / "wav2lip_random.pth"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save({"state_dict": build_network().state_dict()}, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--fps", type=int, default=3)
    parser.add_argument("--code", help="a wav2lip.py to measure instead of dubforge.models.wav2lip")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dubforge-wav2lip-memory"))
    parser.add_argument("--stage", nargs=2, help=argparse.SUPPRESS)  # internal: prepare|render FOLDER
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage:
        kind, folder = args.stage
        if kind == "prepare":
            prepare(Path(folder), float(Path(folder).name.removesuffix("min")), args.fps)
        else:
            render(Path(folder), checkpoint_file(args.work), args.code)
        return 0
    checkpoint_file(args.work)
    rows = []
    for minutes in args.minutes:
        folder = args.work / f"{minutes:g}min"
        base = [sys.executable, __file__, "--fps", str(args.fps), "--work", str(args.work)]
        subprocess.run([*base, "--stage", "prepare", str(folder)], check=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([*base, *(["--code", args.code] if args.code else []), "--stage", "render", str(folder)],
                              check=True, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row.update(minutes=minutes, wall_s=time.perf_counter() - start,
                   cpu_s=after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        rows.append(row)
    print(f"wav2lip render, {args.code or 'dubforge.models.wav2lip'}, {args.fps} fps, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("  minutes  frames  peak MiB  ratio  cpu s   wall s")
    for row in rows:
        print(f"  {row['minutes']:7g}  {row['frames']:6d}  {row['peak_mib']:8.0f}  {row['peak_mib'] / rows[0]['peak_mib']:5.2f}"
              f"  {row['cpu_s']:6.1f}  {row['wall_s']:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
