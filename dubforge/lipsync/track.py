"""Face tracking once per source video: one identity per physical face, the speaking face per shot.

Per frame (decoded upright when a display matrix says so; landmarks are stored in the file's own pixel
coordinates, which is where the render works): face-mesh detections, overlapping duplicates merged (box
IoU), then assigned to the live tracklets by the Hungarian method on box overlap + appearance. A shot cut
(a jump in a thumbnail frame difference) ends every tracklet and restarts the detector. Tracklets are then
re-linked into identities by appearance (landmark shape + skin colour) when they never share a frame, so a
face that leaves and re-enters, or a cut between two framings of one person, keeps one identity. In each
shot the speaking identity is chosen (mouth opening vs the source speech envelope; the one on screen
longest without speech). Nothing per frame is kept but landmarks and a small signature: memory grows only
with those arrays, never with pixels."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist

from dubforge.core.files import (
    atomic_path,
    fingerprint,
    sha256_file,
    write_json_atomic,
)
from dubforge.lipsync import geometry as g
from dubforge.lipsync.detect import FaceMesh
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.rows import BLOCK, Rows, spill
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


@dataclass
class _Tracklet:
    shot: int
    frames: list[int] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)
    sigs: list[np.ndarray] = field(default_factory=list)
    lips: list[np.ndarray] = field(default_factory=list)  # mouth-minus-skin colour samples per frame (occlusion)

    @property
    def box(self) -> np.ndarray:
        return _box(self.points[-1])

    def signature(self) -> np.ndarray:
        return np.median(np.stack(self.sigs), axis=0)


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

    times: list[float] = []
    pts: list[int] = []
    cuts: list[int] = []
    done: list[_Tracklet] = []
    live: list[_Tracklet] = []
    diffs: list[float] = []
    prev_thumb = None
    turn = None
    mesh = FaceMesh(MAX_FACES)
    try:
        for index, (frame, stored) in enumerate(rgb_frames(video)):
            if turn is None:
                turn = rotation(frame)
            times.append(frame_time(frame, index, info))
            pts.append(frame.pts if frame.pts is not None else -1)
            rgb = upright(stored, turn)
            thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
            if prev_thumb is not None:
                d = float(np.mean(np.abs(thumb.astype(np.float32) - prev_thumb))) / 255.0
                recent = float(np.median(diffs[-10:])) if diffs else 0.0
                if d > CUT_JUMP and d > CUT_RATIO * recent:
                    cuts.append(index)
                    done += live
                    live = []
                    mesh.close()  # tracking mode would follow the old face's box into the new shot
                    mesh = FaceMesh(MAX_FACES)
                diffs.append(d)
            prev_thumb = thumb.astype(np.float32)
            faces = merge_duplicates(mesh(rgb))
            sigs = [signature(rgb, p) for p in faces]
            lips = [lip_colour(rgb, p) for p in faces]
            faces = [upright_to_stored(p, turn, info.width, info.height) for p in faces]
            live, ended = _associate(live, faces, sigs, lips, index, len(cuts))
            done += ended
    finally:
        mesh.close()
    done += live
    n = len(times)
    # Short tracklets (a face across a run of quick cuts) join their person first; what stays short is noise.
    linked = relink(done)
    counts = np.bincount(linked, weights=[len(t.frames) for t in done]) if done else np.zeros(0)
    keep = [k for k, f in enumerate(linked) if counts[f] >= MIN_FRAMES]
    renumber = {f: k for k, f in enumerate(dict.fromkeys(linked[k] for k in keep))}
    tracklets = [done[k] for k in keep]
    identity_of = [renumber[linked[k]] for k in keep]
    for k, t in enumerate(done):  # appearance has done its work; what is kept moves into whole arrays below
        t.sigs = []
        if counts[linked[k]] < MIN_FRAMES:
            t.points, t.lips = [], []
    shots = np.searchsorted(np.asarray(cuts, np.int64), np.arange(n), side="right")

    ids = sorted(set(identity_of))
    faces_points = {f: np.full((n, len(g.SUBSET), 2), np.nan, np.float32) for f in ids}
    present = {f: np.zeros(n, bool) for f in ids}
    lip_offset = {f: np.full((n, _MOUTH_SAMPLES, 2), np.nan, np.float32) for f in ids}
    for t, f in zip(tracklets, identity_of):  # moved, not copied: each frame's arrays are dropped as they land
        for k, frame in enumerate(t.frames):
            faces_points[f][frame], lip_offset[f][frame] = t.points[k], t.lips[k]
        t.points, t.lips = [], []
        present[f][t.frames] = True
    occluded = {f: _occluded(lip_offset[f], present[f]) for f in ids}
    del lip_offset
    envelope = _speech_envelope(speech_wav, np.asarray(times)) if speech_wav else None
    chosen, reason, audio_corr = _choose_per_shot(faces_points, present, shots, envelope,
                                                  max(round(TURN_WINDOW_S * info.fps), 5), round(TURN_MIN_S * info.fps))
    if lines and envelope is not None:
        chosen, bound = _by_speaker(chosen, faces_points, present, envelope, np.asarray(times), lines)
        reason += "; script speakers: " + (", ".join(f"{who} = face {f}" for who, f in bound.items()) or "none bound")

    points = np.full((n, len(g.SUBSET), 2), np.nan, np.float32)
    identity = np.full(n, -1, np.int64)
    covered = np.array([f >= 0 and bool(occluded[f][i]) for i, f in enumerate(chosen)], bool)
    for i, f in enumerate(chosen):
        if f >= 0 and present[f][i] and not occluded[f][i] and _usable(faces_points[f][i]):
            points[i], identity[i] = faces_points[f][i], f
    del faces_points  # the chosen face's landmarks are all that is kept (memory: one (n, points, 2) array)
    valid = identity >= 0
    segment = _segments(identity, shots)
    points = _smooth(points, segment)
    pose = np.tile(np.eye(2, 3), (n, 1, 1))
    for f in np.unique(identity[valid]):  # one rigid template per person
        mine = identity == f
        pose[mine] = g.poses(np.nan_to_num(points[mine], copy=False), np.ones(int(mine.sum()), bool))[0]
    pose = _smooth_pose(pose, segment)

    npz_path = json_path.with_suffix(".npz")
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, times=np.asarray(times), pts=np.asarray(pts, np.int64), valid=valid,
                                points=points.astype(np.float32, copy=False), pose=pose, identity=identity,
                                segment=segment, shot=shots.astype(np.int64), occluded=covered)
    main = int(np.bincount(identity[valid]).argmax()) if valid.any() else None
    track = FaceTrack(
        npz=npz_path, video_sha256=video_sha, frame_count=n, fps=info.fps, width=info.width,
        height=info.height, frames_with_face=int(valid.sum()), face_id=main,
        reason=reason if valid.any() or not ids else f"{reason}; but never usable (too small or turned away)",
        faces_seen=len(ids), audio_correlation=audio_corr, shots=len(cuts) + 1, rotation=int(turn or 0),
        speakers=sorted({int(f) for f in identity[valid]}),
        frames_occluded=int(covered.sum()),
    )
    write_json_atomic(json_path, json.loads(track.model_dump_json()))
    return track


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


def _occluded(offset: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Frames where a share of the mouth samples is far from this person's usual (each sample's median), in
    two consecutive frames or more: the mouth is covered. A single odd frame is noise."""
    far = np.zeros(len(present), bool)
    if present.sum() < 5:
        return far
    usual = np.median(offset[present], axis=0)
    off = np.linalg.norm(offset[present] - usual, axis=2) > OCCLUDED_LAB
    far[present] = off.mean(1) > OCCLUDED_SHARE
    neighbour = np.zeros_like(far)
    neighbour[1:] |= far[:-1]
    neighbour[:-1] |= far[1:]
    return far & neighbour


def _appearance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.sqrt(len(a) / 10.0))


def _associate(live: list[_Tracklet], faces, sigs, lips, index: int, shot: int):
    """Hungarian assignment of this frame's faces to live tracklets; returns (live, ended)."""
    ended = [t for t in live if index - t.frames[-1] > MAX_GAP]
    live = [t for t in live if index - t.frames[-1] <= MAX_GAP]
    cost = np.full((len(live), len(faces)), 1e6)
    for i, t in enumerate(live):
        ref = t.signature() if len(t.sigs) < 8 else np.median(np.stack(t.sigs[-8:]), axis=0)
        for j, p in enumerate(faces):
            overlap = iou(t.box, _box(p))
            if overlap > 0.05:
                cost[i, j] = (1.0 - overlap) + 0.5 * _appearance(ref, sigs[j])
    matched = set()
    if live and faces:
        rows, cols = linear_sum_assignment(cost)
        for i, j in zip(rows, cols):
            if cost[i, j] < 1e5:
                live[i].frames.append(index)
                live[i].points.append(faces[j])
                live[i].sigs.append(sigs[j])
                live[i].lips.append(lips[j])
                matched.add(j)
    for j, p in enumerate(faces):
        if j not in matched:
            live.append(_Tracklet(shot, [index], [p], [sigs[j]], [lips[j]]))
    return live, ended


def relink(tracklets: list[_Tracklet]) -> list[int]:
    """Identity per tracklet: tracklets that never share a frame and look alike (appearance distance below
    RELINK) are joined, closest pairs first (single linkage, refusing any join that would put two
    tracklets of one identity in the same frame)."""
    k = len(tracklets)
    group = list(range(k))
    if k > 1:
        sig = np.stack([t.signature() for t in tracklets])
        dist = pdist(sig) / np.sqrt(sig.shape[1] / 10.0)  # _appearance for every pair, condensed
        a_idx, b_idx = np.triu_indices(k, 1)
        close = np.flatnonzero(dist < RELINK)
        pairs = sorted(zip(dist[close].tolist(), a_idx[close].tolist(), b_idx[close].tolist()))
    else:
        pairs = []
    members = {i: {i} for i in range(k)}
    frames_of = {i: set(t.frames) for i, t in enumerate(tracklets)}
    for _, a, b in pairs:
        ga, gb = group[a], group[b]
        if ga == gb or frames_of[ga] & frames_of[gb]:
            continue
        for m in members[gb]:
            group[m] = ga
        members[ga] |= members.pop(gb)
        frames_of[ga] |= frames_of.pop(gb)
    order = {gid: n for n, gid in enumerate(sorted(set(group), key=lambda x: min(tracklets[x].frames)))}
    return [order[gid] for gid in group]


def _usable(points: np.ndarray) -> bool:
    return _face_width(points) >= MIN_FACE_PX and 0.33 <= g.yaw_ratio(points) <= 3.0


def _face_width(points: np.ndarray) -> float:
    """Cheek to cheek, whatever the in-plane rotation."""
    return float(np.linalg.norm(points[g.sub(234)[0]] - points[g.sub(454)[0]]))


def _choose_per_shot(curves: dict, present: dict, shots: np.ndarray, envelope, window: int = 50,
                     min_run: int = 25) -> tuple[list[int], str, float | None]:
    """The face to render per frame: per shot, the face whose mouth moves with the source speech (or the one on
    screen longest without speech); within a shot, another face takes over for its turns (see TURN_*)."""
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
            corr = {f: _masked_corr(g.opening(np.nan_to_num(curves[f])), envelope, present[f] & idx)
                    for f in candidates}
        if len(candidates) == 1:
            (f,) = candidates
        elif envelope is not None:
            f = max(candidates, key=lambda c: corr[c])
            notes.append(f"shot {s}: face {f} moves with the speech (r={corr[f]:.2f} vs "
                         + ", ".join(f"{corr[c]:.2f}" for c in candidates if c != f) + ")")
        else:
            sizes = {c: float(np.nanmedian([_face_width(p) for p in curves[c][present[c] & idx]])) for c in candidates}
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
    corr = np.array([[_masked_corr(g.opening(np.nan_to_num(curves[f])), envelope, present[f] & spans[w])
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
    r = {c: np.nan_to_num(_rolling_corr(g.opening(np.nan_to_num(curves[c])), envelope, present[c] & idx,
                                        window)[frames_], nan=-1.0) for c in candidates}
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


def _smooth(points: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Zero-phase Gaussian smoothing along time within each segment (lips lighter), in place: each segment's
    filter reads its own rows, copied by the indexing before they are written."""

    out = points
    lips = np.zeros(points.shape[1], bool)
    lips[g.sub(g.LIPS)] = True
    for a, b in spans(segment):
        if b - a < 3:
            continue
        out[a:b, lips] = gaussian_filter1d(points[a:b, lips], LIP_SIGMA, axis=0, mode="nearest")
        out[a:b, ~lips] = gaussian_filter1d(points[a:b, ~lips], FACE_SIGMA, axis=0, mode="nearest")
    return out


def _smooth_pose(pose: np.ndarray, segment: np.ndarray) -> np.ndarray:

    out = pose.copy()
    for a, b in spans(segment):
        if b - a >= 3:
            out[a:b] = gaussian_filter1d(pose[a:b], POSE_SIGMA, axis=0, mode="nearest")
    return out
