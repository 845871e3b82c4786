"""Face tracking once per source video: one identity per physical face, the speaking face per shot.

Per frame (decoded upright when a display matrix says so; landmarks are stored in the file's own pixel
coordinates, which is where the render works): face-mesh detections, overlapping duplicates merged (box
IoU), then assigned to the live tracklets by the Hungarian method on box overlap + appearance. A shot cut
(a jump in a thumbnail frame difference) ends every tracklet and restarts the detector. Tracklets are then
re-linked into identities by appearance (landmark shape + skin colour) when they never share a frame, so a
face that leaves and re-enters, or a cut between two framings of one person, keeps one identity. In each
shot the speaking identity is chosen (mouth opening vs the source speech envelope; the one on screen
longest without speech). Memory does not grow with the length of the source beyond a few scalars a frame: every
detection (landmarks, signature, mouth colours) is spilled to a row file as it is made, and the medians, the
smoothing, the poses and the track's npz are computed from those files a window of frames at a time."""

from __future__ import annotations

import contextlib
import json
import tempfile
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist

from dubforge.core.files import (
    fingerprint,
    sha256_file,
    write_json_atomic,
)
from dubforge.lipsync import geometry as g
from dubforge.lipsync.detect import FaceMesh
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.rows import BLOCK, Rows, exact_median, row_appender, row_writer, spill, write_npz
from dubforge.lipsync.video import frame_time, probe, rgb_frames, rotation, upright, upright_to_stored
from dubforge.media.audio import BLOCK_S, WavReader

TRACK_VERSION = 12  # 3: duplicates merged, shots, identities, orientation; 4-8: occlusion; 9-11: turns within a shot; 12: script speakers
MAX_FACES = 3
MIN_FACE_PX = 40.0  # narrower faces are passed through: too small to render a mouth into
LIP_SIGMA, FACE_SIGMA, POSE_SIGMA = 0.6, 1.0, 1.5  # temporal smoothing, in frames
DUPLICATE_IOU = 0.4  # two meshes in one frame overlapping this much are one face
MAX_GAP = 15  # frames a tracklet may miss and still continue (within a shot)
CUT_JUMP, CUT_RATIO = 0.15, 4.0  # thumbnail difference (0..1) and its ratio to the recent median
RELINK = 1.0  # appearance distance below which two tracklets are one identity
MIN_FRAMES = 3  # identities seen in fewer frames are false detections
# Occlusion: a mouth sample whose colour minus the skin's (Lab a, b) is this far from its usual is off; this share
# of the samples off in two consecutive frames means something covers the mouth (clean footage: at most ~0.15 in
# single frames, 99% under 0.08; a bar over the mouth: 0.15-0.9 even where the mesh drifts under it).
OCCLUDED_LAB, OCCLUDED_SHARE = 8.0, 0.12
# Turns within a shot (two people in one frame taking turns): another face takes over where its mouth correlates
# with the speech by TURN_MARGIN more than the current speaker's over a TURN_WINDOW_S window, for TURN_MIN_S or more.
TURN_WINDOW_S, TURN_MIN_S, TURN_MARGIN, TURN_MIN_R = 2.0, 1.0, 0.2, 0.3
SPEAKER_MIN_FRAMES = 10  # frames of a speaker's lines a face must be on screen for to be bound to that speaker
WINDOW = BLOCK  # frames (or detections) per window read back from the spill files


class _Spill:
    """Every detection made while tracking, a row each in three .npy files in `folder`, in frame order: its
    landmarks (stored coordinates), appearance signature and mouth colours (about 1.8 KB). Appended to while
    tracking (inside `with`); read back a window at a time with `rows(kind)`."""

    KINDS = ("points", "sigs", "lips")

    def __init__(self, folder: Path):
        self.paths = {kind: Path(folder) / f"detections.{kind}.npy" for kind in self.KINDS}
        self._stack = contextlib.ExitStack()
        self._append: list = []

    def __enter__(self) -> _Spill:
        shapes = ((len(g.SUBSET), 2), (2 * len(_SHAPE) + 3,), (_MOUTH_SAMPLES, 2))
        self._append = [self._stack.enter_context(row_appender(self.paths[kind], shape, np.float32))
                        for kind, shape in zip(self.KINDS, shapes)]
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def add(self, points: np.ndarray, sig: np.ndarray, lips: np.ndarray) -> int:
        """Spill one detection; returns its row."""
        append_points, append_sig, append_lips = self._append
        append_sig(sig)
        append_lips(lips)
        return append_points(points)

    def rows(self, kind: str) -> Rows:
        return Rows(self.paths[kind], WINDOW)


@dataclass
class _Tracklet:
    """One face followed through a shot. Its detections are rows of the spill files (`rows`); in memory are only
    their frames and three scalars each (mouth opening, face width, usable), the last landmarks (its box) and the
    last 8 signatures."""

    points: np.ndarray
    recent: deque = field(default_factory=lambda: deque(maxlen=8))
    frames: array = field(default_factory=lambda: array("i"))
    rows: array = field(default_factory=lambda: array("i"))
    opening: array = field(default_factory=lambda: array("f"))  # g.opening of the landmarks
    width: array = field(default_factory=lambda: array("f"))  # _face_width
    usable: array = field(default_factory=lambda: array("b"))  # _usable

    @property
    def box(self) -> np.ndarray:
        return _box(self.points)

    def reference(self) -> np.ndarray:
        """What a new detection's signature is compared with: the median of the last 8 (of all, while fewer)."""
        return np.median(np.stack(self.recent), axis=0)

    def add(self, frame: int, points: np.ndarray, sig: np.ndarray, lips: np.ndarray, spill: _Spill) -> None:
        self.points = points
        self.recent.append(sig)
        self.frames.append(frame)
        self.rows.append(spill.add(points, sig, lips))
        stored = np.asarray(points, np.float32)  # as the track keeps them
        self.opening.append(float(g.opening(np.nan_to_num(stored))))
        self.width.append(_face_width(stored))
        self.usable.append(_usable(stored))


@dataclass
class _Frame:
    """One decoded frame as the tracker sees it: its time and pts, whether a cut comes before it, and each face
    found (landmarks in stored coordinates, appearance signature, mouth colours)."""

    time: float
    pts: int
    cut: bool
    faces: list[np.ndarray]
    sigs: list[np.ndarray]
    lips: list[np.ndarray]


class _Detector:
    """The video's frames (decoded upright when a display matrix says so) as `_Frame`s: shot cuts from a
    thumbnail difference, and face-mesh detections with overlapping duplicates merged. `turn`: the rotation."""

    def __init__(self, video: Path, info):
        self.video, self.info, self.turn = video, info, 0

    def __iter__(self) -> Iterator[_Frame]:
        info, turn = self.info, None
        diffs: deque[float] = deque(maxlen=10)
        prev_thumb = None
        mesh = FaceMesh(MAX_FACES)
        try:
            for index, (frame, stored) in enumerate(rgb_frames(self.video)):
                if turn is None:
                    turn = self.turn = rotation(frame)
                rgb = upright(stored, turn)
                thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
                cut = False
                if prev_thumb is not None:
                    d = float(np.mean(np.abs(thumb.astype(np.float32) - prev_thumb))) / 255.0
                    recent = float(np.median(np.asarray(diffs))) if diffs else 0.0
                    if d > CUT_JUMP and d > CUT_RATIO * recent:
                        cut = True
                        mesh.close()  # tracking mode would follow the old face's box into the new shot
                        mesh = FaceMesh(MAX_FACES)
                    diffs.append(d)
                prev_thumb = thumb.astype(np.float32)
                faces = merge_duplicates(mesh(rgb))
                sigs = [signature(rgb, p) for p in faces]
                lips = [lip_colour(rgb, p) for p in faces]
                faces = [upright_to_stored(p, turn, info.width, info.height) for p in faces]
                yield _Frame(frame_time(frame, index, info), frame.pts if frame.pts is not None else -1, cut,
                             faces, sigs, lips)
        finally:
            mesh.close()


def track_face(video: Path, work_dir: Path, speech_wav: Path | None = None,
               lines: Sequence[tuple[float, float, str]] = ()) -> FaceTrack:
    """`lines`: (start, end, speaker) of the script's lines; with two or more speakers named (and the source
    speech), each speaker is bound to a face and that face is rendered during the speaker's lines."""
    video = Path(video)
    info = probe(video)
    video_sha = sha256_file(video)
    lines = [(float(a), float(b), str(who)) for a, b, who in lines] if len({who for *_, who in lines}) > 1 else []
    key = fingerprint(video_sha, TRACK_VERSION, speech_wav if speech_wav else None, lines or None)
    json_path = Path(work_dir) / f"face-track-{key}.json"
    if json_path.is_file():
        cached = FaceTrack.model_validate_json(json_path.read_text())
        if cached.npz.is_file():
            return cached
    json_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".face-track-{key}.", dir=json_path.parent) as scratch:  # the spills
        track = _track(_Detector(video, info), info, video_sha, speech_wav, lines, json_path.with_suffix(".npz"),
                       Path(scratch))
    write_json_atomic(json_path, json.loads(track.model_dump_json()))
    return track


def _track(detector, info, video_sha: str, speech_wav: Path | None, lines: list[tuple[float, float, str]],
           npz_path: Path, scratch: Path) -> FaceTrack:
    """The face track of `detector`'s frames (see `_Detector`), written to `npz_path` (and its landmarks to the
    .points.npy that `Landmarks` reads). Memory: per-frame scalars (about 100 bytes a frame for one face); the
    detections go to files in `scratch` as they are made and come back a window at a time."""
    times, pts = array("d"), array("q")
    cuts: list[int] = []
    done: list[_Tracklet] = []
    live: list[_Tracklet] = []
    with _Spill(scratch) as spill:
        for index, frame in enumerate(detector):
            times.append(frame.time)
            pts.append(frame.pts)
            if frame.cut:
                cuts.append(index)
                done += live
                live = []
            live, ended = _associate(live, frame.faces, frame.sigs, frame.lips, index, spill)
            done += ended
    done += live
    n = len(times)
    frame_times = np.frombuffer(times, np.float64) if n else np.zeros(0)
    # Short tracklets (a face across a run of quick cuts) join their person first; what stays short is noise.
    sigs = spill.rows("sigs")
    signatures = np.stack([exact_median(partial(sigs.take, t.rows), len(t.rows), WINDOW) for t in done]) \
        if done else np.zeros((0, sigs.shape[1]), np.float32)
    linked = relink(signatures, [np.frombuffer(t.frames, np.int32) for t in done])
    del signatures
    counts = np.bincount(linked, weights=[len(t.frames) for t in done]) if done else np.zeros(0)
    keep = [k for k, f in enumerate(linked) if counts[f] >= MIN_FRAMES]
    renumber = {f: k for k, f in enumerate(dict.fromkeys(linked[k] for k in keep))}
    shots = np.searchsorted(np.asarray(cuts, np.int64), np.arange(n), side="right")

    # Per person and frame: where its detection is (row), and the scalars the speaker choice reads.
    ids = sorted(set(renumber.values()))
    row_of = {f: np.full(n, -1, np.int32) for f in ids}
    opening = {f: np.zeros(n, np.float32) for f in ids}
    width = {f: np.zeros(n, np.float32) for f in ids}
    usable = {f: np.zeros(n, bool) for f in ids}
    for k in keep:
        t, f = done[k], renumber[linked[k]]
        frames = np.frombuffer(t.frames, np.int32)
        row_of[f][frames] = t.rows
        opening[f][frames], width[f][frames], usable[f][frames] = t.opening, t.width, t.usable
    del done, live
    present = {f: row_of[f] >= 0 for f in ids}
    lips = spill.rows("lips")
    occluded = {f: _occluded(lips, row_of[f][present[f]], present[f]) for f in ids}
    envelope = _speech_envelope(speech_wav, frame_times) if speech_wav else None
    chosen, reason, audio_corr = _choose_per_shot(opening, width, present, shots, envelope,
                                                  max(round(TURN_WINDOW_S * info.fps), 5), round(TURN_MIN_S * info.fps))
    if lines and envelope is not None:
        chosen, bound = _by_speaker(chosen, opening, present, envelope, frame_times, lines)
        reason += "; script speakers: " + (", ".join(f"{who} = face {f}" for who, f in bound.items()) or "none bound")
    del opening, width

    rendered = np.asarray(chosen, np.int64)
    identity = np.full(n, -1, np.int64)
    source_row = np.full(n, -1, np.int64)  # the chosen face's detection, where it is rendered
    covered = np.zeros(n, bool)
    for f in ids:
        mine = rendered == f
        covered[mine] = occluded[f][mine]
        mine &= present[f] & ~occluded[f] & usable[f]
        identity[mine], source_row[mine] = f, row_of[f][mine]
    del row_of, present, usable, occluded, chosen, rendered
    valid = identity >= 0
    segment = _segments(identity, shots)

    # The landmarks: the chosen detections (NaN elsewhere), smoothed within segments, a window at a time.
    points_rows = spill.rows("points")
    raw = scratch / "chosen.npy"
    shape = (n, len(g.SUBSET), 2)
    with row_writer(raw, shape, np.float32) as write:
        for a in range(0, n, WINDOW):
            here = source_row[a: a + WINDOW]
            block = np.full((len(here), *shape[1:]), np.nan, np.float32)
            if (here >= 0).any():
                block[here >= 0] = np.concatenate(list(points_rows.take(here[here >= 0])))
            write(block)
    del source_row
    landmarks = npz_path.with_name(npz_path.stem + ".points.npy")  # where Landmarks looks for them
    normed = scratch / "normed.npy"  # each valid frame's rigid points, eye-normalised: the pose templates
    rigid = g.sub(g.RIGID)
    with row_writer(landmarks, shape, np.float32) as write, \
            row_writer(normed, (int(valid.sum()), len(rigid), 2), np.float64) as write_normed:
        for a, block in _smoothed(Rows(raw, WINDOW), segment, _smooth_points):
            write(block)
            for p in np.nan_to_num(block[valid[a: a + len(block)]]):
                write_normed(g.apply(g.eye_normalise(p), p[rigid]))
    marks, templates = Rows(landmarks, WINDOW), {}
    normed_rows, order = Rows(normed, WINDOW), identity[valid]
    for f in np.unique(order):  # one rigid template per person
        person = np.flatnonzero(order == f)
        templates[int(f)] = exact_median(partial(normed_rows.take, person), len(person), WINDOW)
    raw_pose = scratch / "pose.npy"
    with row_writer(raw_pose, (n, 2, 3), np.float64) as write:
        for a, block in marks.windows():
            pose = np.tile(np.eye(2, 3), (len(block), 1, 1))
            block = np.nan_to_num(block)
            for j in np.flatnonzero(valid[a: a + len(block)]):
                pose[j] = g.similarity(block[j, rigid], templates[int(identity[a + j])])
            write(pose)

    write_npz(npz_path, {
        "times": frame_times, "pts": np.frombuffer(pts, np.int64) if n else np.zeros(0, np.int64), "valid": valid,
        "points": (shape, np.float32, (block for _, block in marks.windows())),
        "pose": ((n, 2, 3), np.float64, (block for _, block in _smoothed(Rows(raw_pose, WINDOW), segment, _smooth_pose))),
        "identity": identity, "segment": segment, "shot": shots.astype(np.int64), "occluded": covered})
    main = int(np.bincount(identity[valid]).argmax()) if valid.any() else None
    return FaceTrack(
        npz=npz_path, video_sha256=video_sha, frame_count=n, fps=info.fps, width=info.width,
        height=info.height, frames_with_face=int(valid.sum()), face_id=main,
        reason=reason if valid.any() or not ids else f"{reason}; but never usable (too small or turned away)",
        faces_seen=len(ids), audio_correlation=audio_corr, shots=len(cuts) + 1, rotation=int(detector.turn or 0),
        speakers=sorted({int(f) for f in identity[valid]}),
        frames_occluded=int(covered.sum()),
    )


def load_arrays(track: FaceTrack, points: bool = True) -> dict[str, np.ndarray]:
    """The track's per-frame arrays; points=False leaves out the landmarks (read them with `Landmarks`)."""
    with np.load(track.npz) as data:
        arrays = {k: data[k] for k in data.files if points or k != "points"}
    if "segment" not in arrays:  # a track from a renderer-built npz (portrait) has one segment
        arrays["segment"] = np.where(arrays["valid"], 0, -1)
        arrays["identity"] = arrays["segment"].copy()
    return arrays


class Landmarks:
    """A track's landmarks read a window of frames at a time (see dubforge.lipsync.rows): `points(i)` (pixels,
    NaN -> 0) and `canon(i)` (canonical coordinates), or `windows()` over every frame. Memory: one window,
    whatever the length of the source; the values are those of the whole arrays (`load_arrays`)."""

    def __init__(self, track: FaceTrack, pose: np.ndarray, block: int = BLOCK):
        npz = Path(track.npz)
        self.rows = Rows(spill(npz, "points", npz.with_name(npz.stem + ".points.npy")), block)
        self.pose = pose
        self._start = 0
        self._points = np.zeros((0, len(g.SUBSET), 2), np.float32)
        self._canon: np.ndarray = np.zeros((0, len(g.SUBSET), 2))

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, i: int) -> None:
        if not self._start <= i < self._start + len(self._points):
            self._start = i - i % self.rows.block
            raw = self.rows.window(self._start, self._start + self.rows.block)
            self._points = np.nan_to_num(raw)
            self._canon = g.canonical(self.pose[self._start: self._start + len(raw)], raw)

    def points(self, i: int) -> np.ndarray:
        self._load(i)
        return self._points[i - self._start]

    def canon(self, i: int) -> np.ndarray:
        self._load(i)
        return self._canon[i - self._start]

    def windows(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first frame, points with NaN -> 0, canonical points) per window."""
        for a, raw in self.rows.windows():
            yield a, np.nan_to_num(raw), g.canonical(self.pose[a: a + len(raw)], raw)

    def descriptors(self) -> np.ndarray:
        """g.descriptor of every frame's canonical landmarks, (T, 3)."""
        parts = [g.descriptor(canon) for _, _, canon in self.windows()]
        return np.concatenate(parts) if parts else np.zeros((0, 3))


def _box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(0), points.max(0)])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def merge_duplicates(faces: list[np.ndarray]) -> list[np.ndarray]:
    """Drop meshes whose box overlaps an earlier one by DUPLICATE_IOU or more (mediapipe's tracking mode
    can return two meshes of one face)."""
    kept: list[np.ndarray] = []
    for p in faces:
        if all(iou(_box(p), _box(q)) < DUPLICATE_IOU for q in kept):
            kept.append(p)
    return kept


_SKIN = g.sub([205, 425, 207, 427, 187, 411, 4, 1, 2, 98, 327, 152, 148, 377])  # cheeks, nose, chin: no eyes, no lips
_SHAPE = g.sub(g.FACE_OVAL + g.RIGID + g.NOSE)


def signature(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Appearance of one detected face (upright coordinates): its eye-normalised landmark shape, made
    mirror-symmetric (a mirrored close-up is the same person), and the colour of its skin (Lab a, b and
    a lightness, sampled at cheeks, nose and chin)."""
    canon = g.apply(g.eye_normalise(points), points[_SHAPE])
    shape = np.sort(np.abs(canon[:, 0])), canon[:, 1]
    h, w = rgb.shape[:2]
    xy = np.clip(np.round(points[_SKIN]).astype(int), 0, [w - 1, h - 1])
    patch = rgb[xy[:, 1], xy[:, 0]].reshape(-1, 1, 3)
    lab = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    colour = np.median(lab, axis=0) / np.array([60.0, 8.0, 8.0])  # scale: ~1 unit = a clearly different face
    return np.concatenate([shape[0] * 6.0, shape[1] * 6.0, colour]).astype(np.float32)


_LIP_OUTER = g.sub(g.UPPER_OUTER + g.LOWER_OUTER)
_LIP_INNER = g.sub(g.UPPER_INNER + g.LOWER_INNER)


def _lab(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Lab colour (OpenCV 8-bit scale) at each point, averaged over its 3x3 neighbourhood."""
    h, w = rgb.shape[:2]
    xy = np.clip(np.round(points).astype(int), 1, [w - 2, h - 2])
    patch = np.stack([rgb[xy[:, 1] + dy, xy[:, 0] + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).mean(0)
    return cv2.cvtColor(patch.astype(np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)


_MOUTH_SAMPLES = 2 * len(_LIP_OUTER)


def lip_colour(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(a, b) minus the skin's at the lips (midway between outer and inner contours) and on a ring just outside
    them, (_MOUTH_SAMPLES, 2): lips are redder than skin; a hand, a microphone or a bar over the mouth is not.
    Relative to the skin, so it holds across lighting and shots."""
    outer = points[_LIP_OUTER]
    ring = outer + 0.35 * (outer - outer.mean(0))
    samples = _lab(rgb, np.vstack([0.5 * (outer + points[_LIP_INNER]), ring]))
    return samples[:, 1:] - np.median(_lab(rgb, points[_SKIN]), 0)[1:]


def _occluded(lips: Rows, rows: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Frames where a share of the mouth samples is far from this person's usual (each sample's median), in
    two consecutive frames or more: the mouth is covered. A single odd frame is noise. `rows`: the person's
    mouth colours (lip_colour) in `lips`, one per frame where `present`."""
    far = np.zeros(len(present), bool)
    if len(rows) < 5:
        return far
    usual = exact_median(lambda: lips.take(rows), len(rows), WINDOW)
    off = [np.linalg.norm(offset - usual, axis=2) > OCCLUDED_LAB for offset in lips.take(rows)]
    far[present] = np.concatenate(off).mean(1) > OCCLUDED_SHARE
    neighbour = np.zeros_like(far)
    neighbour[1:] |= far[:-1]
    neighbour[:-1] |= far[1:]
    return far & neighbour


def _appearance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.sqrt(len(a) / 10.0))


def _associate(live: list[_Tracklet], faces, sigs, lips, index: int, spill: _Spill):
    """Hungarian assignment of this frame's faces to live tracklets; returns (live, ended)."""
    ended = [t for t in live if index - t.frames[-1] > MAX_GAP]
    live = [t for t in live if index - t.frames[-1] <= MAX_GAP]
    cost = np.full((len(live), len(faces)), 1e6)
    for i, t in enumerate(live):
        ref = t.reference()
        for j, p in enumerate(faces):
            overlap = iou(t.box, _box(p))
            if overlap > 0.05:
                cost[i, j] = (1.0 - overlap) + 0.5 * _appearance(ref, sigs[j])
    matched = set()
    if live and faces:
        rows, cols = linear_sum_assignment(cost)
        for i, j in zip(rows, cols):
            if cost[i, j] < 1e5:
                live[i].add(index, faces[j], sigs[j], lips[j], spill)
                matched.add(j)
    for j, p in enumerate(faces):
        if j not in matched:
            live.append(_Tracklet(p))
            live[-1].add(index, p, sigs[j], lips[j], spill)
    return live, ended


def relink(signatures: np.ndarray, frames: Sequence[np.ndarray]) -> list[int]:
    """Identity per tracklet, given each tracklet's signature (the median of its detections') and its frames
    (ascending): tracklets that never share a frame and look alike (appearance distance below RELINK) are
    joined, closest pairs first (single linkage, refusing any join that would put two tracklets of one
    identity in the same frame)."""
    k = len(frames)
    group = list(range(k))
    if k > 1:
        sig = signatures
        dist = pdist(sig) / np.sqrt(sig.shape[1] / 10.0)  # _appearance for every pair, condensed
        a_idx, b_idx = np.triu_indices(k, 1)
        close = np.flatnonzero(dist < RELINK)
        pairs = sorted(zip(dist[close].tolist(), a_idx[close].tolist(), b_idx[close].tolist()))
    else:
        pairs = []
    members = {i: {i} for i in range(k)}
    frames_of = dict(enumerate(frames))
    for _, a, b in pairs:
        ga, gb = group[a], group[b]
        if ga == gb or _share_a_frame(frames_of[ga], frames_of[gb]):
            continue
        for m in members[gb]:
            group[m] = ga
        members[ga] |= members.pop(gb)
        frames_of[ga] = np.union1d(frames_of[ga], frames_of.pop(gb))
    order = {gid: n for n, gid in enumerate(sorted(set(group), key=lambda x: frames[x][0]))}
    return [order[gid] for gid in group]


def _share_a_frame(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ascending frame arrays have a frame in common."""
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    at = np.minimum(np.searchsorted(big, small), len(big) - 1)
    return bool((big[at] == small).any())


def _usable(points: np.ndarray) -> bool:
    return _face_width(points) >= MIN_FACE_PX and 0.33 <= g.yaw_ratio(points) <= 3.0


def _face_width(points: np.ndarray) -> float:
    """Cheek to cheek, whatever the in-plane rotation."""
    return float(np.linalg.norm(points[g.sub(234)[0]] - points[g.sub(454)[0]]))


def _choose_per_shot(curves: dict, widths: dict, present: dict, shots: np.ndarray, envelope, window: int = 50,
                     min_run: int = 25) -> tuple[list[int], str, float | None]:
    """The face to render per frame: per shot, the face whose mouth moves with the source speech (or the one on
    screen longest without speech); within a shot, another face takes over for its turns (see TURN_*).
    `curves`: each face's mouth opening per frame (g.opening), `widths`: its face width (_face_width)."""
    n = len(shots)
    if not curves:
        return [-1] * n, "no face detected in any frame", None
    chosen = np.full(n, -1, np.int64)
    notes, corrs = [], []
    for s in np.unique(shots):
        idx = shots == s
        here = {f: int(present[f][idx].sum()) for f in curves if present[f][idx].any()}
        if not here:
            continue
        candidates = [f for f in here if here[f] >= 0.25 * max(here.values())]
        if envelope is not None:
            corr = {f: _masked_corr(curves[f], envelope, present[f] & idx) for f in candidates}
        if len(candidates) == 1:
            (f,) = candidates
        elif envelope is not None:
            f = max(candidates, key=lambda c: corr[c])
            notes.append(f"shot {s}: face {f} moves with the speech (r={corr[f]:.2f} vs "
                         + ", ".join(f"{corr[c]:.2f}" for c in candidates if c != f) + ")")
        else:
            sizes = {c: float(np.nanmedian(widths[c][present[c] & idx].astype(np.float64))) for c in candidates}
            f = max(candidates, key=lambda c: (here[c], sizes[c]))
            notes.append(f"shot {s}: no source speech to compare with; face {f} is on screen longest")
        if envelope is not None:
            corrs.append((here[f], corr[f]))
        chosen[idx] = f
        if envelope is not None and len(candidates) > 1:
            turns = _turns(f, candidates, curves, present, idx, envelope, window, min_run)
            if len(set(turns.tolist())) > 1:
                chosen[idx] = turns
                notes.append(f"shot {s}: turns between faces " + ", ".join(str(int(c)) for c in dict.fromkeys(turns)))
    speakers = sorted({int(f) for f in chosen if f >= 0})
    reason = (f"{len(curves)} face(s) over {len(np.unique(shots))} shot(s); speaking: "
              + ", ".join(f"face {f}" for f in speakers)
              + ("" if not notes else "; " + "; ".join(notes[:4]) + (" ..." if len(notes) > 4 else "")))
    if len(curves) == 1 and len(np.unique(shots)) == 1:
        reason = "the only face"
    audio = (float(np.average([c for _, c in corrs], weights=[w for w, _ in corrs])) if corrs else None)
    return chosen.tolist(), reason, audio


def _by_speaker(chosen: list[int], curves: dict, present: dict, envelope: np.ndarray, times: np.ndarray,
                lines: list[tuple[float, float, str]]) -> tuple[list[int], dict[str, int]]:
    """The script names who speaks when: bind each speaker to the face whose mouth moves with the source speech
    during that speaker's lines (one face per speaker, Hungarian on the correlations; a pair that does not
    correlate positively is not bound), then render the bound face wherever it is on screen during its
    speaker's lines, in every shot; a face bound to another speaker is not rendered there (it listens). Other
    frames keep `chosen`."""
    who = sorted({w for *_, w in lines})
    faces = sorted(curves)
    spans = {w: np.zeros(len(times), bool) for w in who}
    for a, b, w in lines:
        spans[w] |= (times >= a) & (times < b)
    corr = np.array([[_masked_corr(curves[f], envelope, present[f] & spans[w])
                      if (present[f] & spans[w]).sum() >= SPEAKER_MIN_FRAMES else 0.0 for f in faces] for w in who])
    rows, cols = linear_sum_assignment(-corr)
    bound = {who[r]: faces[c] for r, c in zip(rows, cols) if corr[r, c] > 0}
    out = np.asarray(chosen, np.int64).copy()
    for w, f in bound.items():
        others = [o for v, o in bound.items() if v != w]
        out[spans[w] & np.isin(out, others)] = -1  # the script says that person listens here
        out[spans[w] & present[f]] = f
    return out.tolist(), bound


def _turns(main: int, candidates: list[int], curves: dict, present: dict, idx: np.ndarray, envelope: np.ndarray,
           window: int, min_run: int) -> np.ndarray:
    """Face per frame of one shot, starting with `main`: another face takes the turn where its windowed
    correlation with the speech beats the current speaker's by TURN_MARGIN (and reaches TURN_MIN_R), and keeps it
    until beaten the same way (hysteresis); turns shorter than `min_run` frames are undone."""
    frames_ = np.flatnonzero(idx)
    r = {c: np.nan_to_num(_rolling_corr(curves[c], envelope, present[c] & idx, window)[frames_], nan=-1.0)
         for c in candidates}
    choice = np.full(len(frames_), main, np.int64)
    current = main
    for k in range(len(frames_)):
        best = max(candidates, key=lambda c: r[c][k])
        if best != current and r[best][k] - r[current][k] > TURN_MARGIN and r[best][k] > TURN_MIN_R:
            # The turn began where the new speaker's correlation overtook the old one's, not where the margin
            # was reached: move the switch back to the crossing.
            j = k
            while j > 0 and choice[j - 1] == current and r[best][j - 1] > r[current][j - 1]:
                j -= 1
            choice[j:k] = best
            current = best
        choice[k] = current
    # Turns shorter than min_run frames go back to the run before them (or after, at the start).
    bounds = [0, *(np.flatnonzero(np.diff(choice)) + 1).tolist(), len(choice)]
    for a, b in pairwise(bounds):
        if b - a < min_run and choice[a] != main:
            choice[a:b] = choice[a - 1] if a > 0 else main
    return choice


def _rolling_corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray, window: int) -> np.ndarray:
    """Correlation of a and b over a centred window of `window` frames, masked frames only (NaN when fewer than
    half the window is usable)."""
    m = mask.astype(float)
    a0, b0 = np.where(mask, a, 0.0), np.where(mask, b, 0.0)
    kernel = np.ones(window)

    def roll(x: np.ndarray) -> np.ndarray:
        return np.convolve(x, kernel, mode="same")

    count = roll(m)
    k = np.maximum(count, 1.0)
    sa, sb = roll(a0), roll(b0)
    cov = roll(a0 * b0) - sa * sb / k
    var = (roll(a0 * a0) - sa**2 / k) * (roll(b0 * b0) - sb**2 / k)
    out = cov / np.sqrt(np.maximum(var, 1e-12))
    out[count < window / 2] = np.nan
    return out


def _segments(identity: np.ndarray, shots: np.ndarray) -> np.ndarray:
    """Segment id per frame (-1: no face): a new segment wherever the shot or the person changes or the
    face is lost. Smoothing, unit selection and fades never cross a segment boundary."""
    seg = np.full(len(identity), -1, np.int64)
    k = -1
    for i in range(len(identity)):
        if identity[i] < 0:
            continue
        if i == 0 or identity[i - 1] != identity[i] or shots[i - 1] != shots[i]:
            k += 1
        seg[i] = k
    return seg


def spans(segment: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each segment (see _segments)."""
    out = []
    for a, b in runs(segment >= 0):
        cut = [a] + [i for i in range(a + 1, b) if segment[i] != segment[i - 1]] + [b]
        out += list(pairwise(cut))
    return out


def _speech_envelope(wav: Path, times: np.ndarray) -> np.ndarray:
    """Log RMS of the speech over 40 ms around each frame time, read a block at a time (never the whole file)."""
    reader = WavReader(wav)
    rate, total = reader.rate, reader.frames
    half = int(0.02 * rate)
    size = max(int(BLOCK_S * rate), 2 * half)
    start, mono = 0, np.zeros(0, np.float32)
    out = np.zeros(len(times))
    for i, t in enumerate(times):
        c = int(t * rate)
        a, b = max(c - half, 0), min(c + half, total)
        if c + half < 0:  # a slice with a negative end counts from the end of the file
            a, b = 0, max(total + c + half, 0)
        if b <= a:
            continue
        if not (start <= a and b <= start + len(mono)):
            start = a
            mono = reader.read(a, max(size, b - a)).mean(axis=1)
        seg = mono[a - start: b - start]
        out[i] = float(np.sqrt(np.mean(seg**2)))
    return np.log(out + 1e-4)


def _masked_corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 5 or np.std(a[mask]) < 1e-9 or np.std(b[mask]) < 1e-9:
        return 0.0
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


# Frames read beyond a window on each side when smoothing: the widest Gaussian's radius (scipy's, truncate=4).
MARGIN = max(int(4.0 * sigma + 0.5) for sigma in (LIP_SIGMA, FACE_SIGMA, POSE_SIGMA))


def _smoothed(rows: Rows, segment: np.ndarray, smooth: Callable[[np.ndarray], np.ndarray]
              ) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, rows) of `rows` with `smooth` applied to each segment of 3 frames or more, a window at a time.
    Each window is read with MARGIN more frames on either side, so each value is the one `smooth` gives on the
    whole segment: a Gaussian of radius MARGIN or less reads nothing further, and where it reaches a segment's
    end it extends that end as on the whole segment."""
    bounds = [(a, b) for a, b in spans(segment) if b - a >= 3]
    starts = np.array([a for a, _ in bounds], np.int64)
    ends = np.array([b for _, b in bounds], np.int64)
    n = len(rows)
    for a in range(0, n, rows.block):
        b = min(a + rows.block, n)
        lo, hi = max(a - MARGIN, 0), min(b + MARGIN, n)
        data = rows.window(lo, hi)
        out = data[a - lo: b - lo].copy()
        for k in range(int(np.searchsorted(ends, a, side="right")), int(np.searchsorted(starts, b))):
            s, e = max(int(starts[k]), lo), min(int(ends[k]), hi)
            smoothed = smooth(data[s - lo: e - lo])
            first, last = max(s, a), min(e, b)
            out[first - a: last - a] = smoothed[first - s: last - s]
        yield a, out


_LIPS = np.isin(np.arange(len(g.SUBSET)), g.sub(g.LIPS))


def _smooth_points(points: np.ndarray) -> np.ndarray:
    """Zero-phase Gaussian smoothing of one segment's landmarks along time (lips lighter)."""
    out = np.empty_like(points)
    out[:, _LIPS] = gaussian_filter1d(points[:, _LIPS], LIP_SIGMA, axis=0, mode="nearest")
    out[:, ~_LIPS] = gaussian_filter1d(points[:, ~_LIPS], FACE_SIGMA, axis=0, mode="nearest")
    return out


def _smooth_pose(pose: np.ndarray) -> np.ndarray:
    return gaussian_filter1d(pose, POSE_SIGMA, axis=0, mode="nearest")
