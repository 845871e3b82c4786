"""The lip-sync robustness cases: transforms of the carphone talking head (mirror, roll, scale, frame
rates, VFR, display matrix, hard cuts, two faces with one speaking, an occluder, a face leaving and
re-entering), each rendered with a dub and scored by the independent scorecard.

Shared by tests/test_lipsync_robustness.py (a fast subset) and benchmarks/lipsync_robustness.py (all)."""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dubforge.core.contracts import Phoneme
from dubforge.lipsync import geometry as g
from dubforge.lipsync.detect import FaceMesh
from dubforge.lipsync.testmedia import carphone_clip, scaled, side_by_side, write_video
from dubforge.lipsync.video import frames, rotation
from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face
from tests.media import speak_english

SENTENCE = "Maybe Bob prefers fluffy purple muffins."
W, H = 320, 240


@dataclass
class Case:
    name: str
    seconds: float = 3.6
    fps: Fraction = Fraction(25)
    size: tuple[int, int] = (W, H)
    face_scale: float = 1.0
    mirror: bool = False
    roll: float = 0.0
    vfr: bool = False
    rotation: int = 0
    cuts: float | None = None  # seconds between hard cuts (wide <-> mirrored close-up)
    decoy: bool = False  # a second face beside the speaker; the source audio follows the speaker's mouth
    turns: bool = False  # with decoy: the audio follows the left face, then the right one (halfway)
    occlude: tuple[float, float] | None = None  # seconds: a grey bar over the mouth
    leave: tuple[float, float] | None = None  # seconds: the face slides out of the frame and back
    extra: dict = field(default_factory=dict)


CASES = {c.name: c for c in [
    Case("mirrored-25fps", mirror=True),
    Case("rolled+20", roll=20.0),
    Case("rolled-20", roll=-20.0),
    Case("face-60px", size=(480, 360), face_scale=0.55),
    Case("face-600px", size=(1280, 720), face_scale=2.3),
    Case("1080p", size=(1920, 1080)),
    Case("24fps", fps=Fraction(24)),
    Case("50fps", fps=Fraction(50)),
    Case("60fps", fps=Fraction(60)),
    Case("vfr", vfr=True),
    Case("display-90", rotation=90),
    Case("display-270", rotation=270),
    Case("hard-cuts", cuts=1.0),
    Case("two-faces", decoy=True, size=(2 * W, H)),
    Case("turn-taking", decoy=True, turns=True, size=(2 * W, H), seconds=6.0),
    Case("occluded-1s", occlude=(1.2, 2.2)),
    Case("leave-reenter", leave=(1.0, 2.4)),
]}


def _times(case: Case, n: int) -> list[float] | None:
    if not case.vfr:
        return None
    rng = np.random.default_rng(7)  # frame gaps of 1/50 .. 1/20 s
    return list(np.concatenate([[0.0], np.cumsum(rng.uniform(1 / 50, 1 / 20, n - 1))]))


def _mouth_curve(rgb_frames: list[np.ndarray]) -> np.ndarray:
    out = []
    with FaceMesh(1, static=True) as mesh:
        for rgb in rgb_frames:
            faces = mesh(rgb)
            out.append(float(g.opening(faces[0])) if faces else 0.0)
    return np.asarray(out)


def _buzz(path: Path, opening: np.ndarray, times: np.ndarray, seconds: float, rate: int = 16000) -> Path:
    """A voiced buzz (120 Hz harmonics) whose loudness follows a mouth-opening curve."""
    t = np.arange(int(seconds * rate)) / rate
    env = np.interp(t, times, np.clip(opening, 0, None) / max(float(opening.max()), 1e-6))
    tone = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 12))
    data = (0.3 * env * tone / 3).astype(np.float32)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.clip(data, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def build(case: Case, work: Path) -> dict:
    """The source clip (and source audio for the two-face case) of a case."""
    fps = float(case.fps)
    n = round(case.seconds * fps)
    times = _times(case, n)
    base_times = np.asarray(times) if times else np.arange(n) / fps
    # The carphone clip is 30 fps material: sample it at each frame's time so motion keeps its real speed.
    clip = carphone_clip(int(np.ceil(base_times[-1] * 30)) + 2)
    raw = [clip[round(t * 30)] for t in base_times]
    w, h = case.size
    speaker_w = w // 2 if case.decoy else w
    if case.cuts:
        wide = scaled(raw, speaker_w, h, case.face_scale)
        close = scaled(raw, speaker_w, h, 1.8 * case.face_scale, mirror=True)
        pictures = [a if int(t // case.cuts) % 2 == 0 else b for a, b, t in zip(wide, close, base_times)]
    elif case.leave:
        a, b = case.leave
        mid = (a + b) / 2
        # Out by a canvas width at the middle of the interval (off screen for its middle quarter), then back.
        shift = [0.0 if t < a or t > b else min(1.0, 1.26 * min((t - a) / (mid - a), (b - t) / (b - mid)))
                 for t in base_times]
        pictures = [scaled([f], speaker_w, h, case.face_scale, case.mirror, case.roll, (s, 0.0))[0]
                    for f, s in zip(raw, shift)]
    else:
        pictures = scaled(raw, speaker_w, h, case.face_scale, case.mirror, case.roll)
    if case.occlude:
        a, b = case.occlude
        for k, t in enumerate(base_times):
            if a <= t < b:
                pictures[k] = pictures[k].copy()
                pictures[k][int(0.55 * h):int(0.8 * h), int(0.3 * speaker_w):int(0.7 * speaker_w)] = 128
    audio = None
    if case.decoy:
        other = [clip[(round(t * 30) + 47) % len(clip)] for t in base_times]  # the same man, other moments
        decoy = scaled(other, w - speaker_w, h, case.face_scale, mirror=True)
        follow = _mouth_curve(pictures)
        if case.turns:
            follow = np.where(base_times < case.seconds / 2, follow, _mouth_curve(decoy))
        audio = _buzz(work / "source.wav", follow, base_times, float(base_times[-1]) + 0.2)
        pictures = side_by_side(pictures, decoy)
    src = write_video(work / "src.mp4", pictures, rate=case.fps, times=times, rotation=case.rotation)
    return {"src": src, "audio": audio, "times": base_times, "n": n}


def dub(work: Path) -> list[Phoneme]:
    spoken = speak_english(SENTENCE, work / "dub.wav", lead=0.4, tail=0.2)
    return [Phoneme(symbol=p, start=s, end=e) for w in spoken.words for p, s, e in w.phonemes]


def _stamps(path: Path) -> list[float]:
    return [float(f.pts * f.time_base) for f in frames(path)]


def _decoy_psnr(out: Path, src: Path, x0: int) -> float:
    err = count = 0.0
    for fo, fs in zip(frames(out), frames(src)):
        a = fo.to_ndarray(format="rgb24")[:, x0:].astype(np.float64)
        b = fs.to_ndarray(format="rgb24")[:, x0:].astype(np.float64)
        err += float(((a - b) ** 2).sum())
        count += a.size
    mse = err / max(count, 1)
    return 99.0 if mse < 1e-10 else float(10 * np.log10(255**2 / mse))


def run(case: Case, work: Path, phonemes: list[Phoneme] | None = None, crf: int = 12) -> dict:
    """Build, track, render (at `crf`: 12 keeps x264 noise below the 40 dB decoy check) and score a case;
    returns the scorecard plus the checks" raw figures."""
    work.mkdir(parents=True, exist_ok=True)
    made = build(case, work)
    phonemes = phonemes if phonemes is not None else dub(work)
    track = track_face(made["src"], work / "cache", made["audio"])
    result = render_lipsync(made["src"], track, phonemes, [], work / "out.mp4", crf=crf)
    per_frame: dict = {}
    card = score_lipsync(result.out_video, made["src"], track, phonemes, per_frame)
    src_stamps, out_stamps = _stamps(made["src"]), _stamps(result.out_video)
    with av.open(str(made["src"])) as a, av.open(str(result.out_video)) as b:
        rot = (rotation(next(a.decode(video=0))), rotation(next(b.decode(video=0))))
    figures = {
        **card, "frames": (len(src_stamps), len(out_stamps)),
        "timestamps_max_error": max((abs(x - y) for x, y in zip(src_stamps, out_stamps)), default=0.0),
        "rotation": rot, "faces_seen": track.faces_seen, "shots": track.shots, "speakers": track.speakers,
        "reason": track.reason,
    }
    if case.decoy:
        figures["decoy_psnr_db"] = _decoy_psnr(result.out_video, made["src"], case.size[0] // 2)
    hidden = np.zeros(made["n"], bool)
    if case.occlude:
        a, b = case.occlude
        hidden = (made["times"] >= a) & (made["times"] < b)
        figures["occluded_frames"] = int(hidden.sum())
        figures["occluded_rendered"] = int((hidden & per_frame["covered"]).sum())
    outside = per_frame["scored"] & ~hidden
    figures["coverage_outside_occlusion"] = float((per_frame["covered"] & outside).sum() / max(outside.sum(), 1))
    return figures
