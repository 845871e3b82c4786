"""Default lip-sync renderer: unit selection from the speaker's own mouth (a "Video Rewrite" mouth bank)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dubforge.core.contracts import Phoneme
from dubforge.core.files import atomic_path, fingerprint, write_json_atomic
from dubforge.lipsync import bank, portrait, select, visemes
from dubforge.lipsync import compose as c
from dubforge.lipsync import geometry as g
from dubforge.lipsync.bank import load_or_build
from dubforge.lipsync.perframe import load_compact
from dubforge.lipsync.portrait import render_portrait
from dubforge.lipsync.records import FaceTrack, LipsyncResult, finish_render
from dubforge.lipsync.track import Landmarks, runs, spans
from dubforge.lipsync.video import (
    EncodeThread,
    H264Writer,
    copy_into,
    frames,
    prefetched,
    probe,
    yuv_planes,
)
from dubforge.lipsync.visemes import (
    SIL,
    Range,
    generic_shapes,
    learned_shapes,
    reference_opening,
    segments,
    trajectory,
)
from dubforge.models.base import LipsyncRenderer, ProgressCallback

VERSION = 4  # 3: per-person units and visemes, segments, no fades at cuts or occluders; 4: open at a release, closures never faded
FADE_FRAMES = 3  # the mouth fades in/out where a face appears or disappears mid-clip
SYNC_MIN = 0.35  # source mouth vs its own phonemes: below this the audio does not belong to the footage
CALIBRATION_FRAMES = 12  # source frames encoded once per render to measure x264's detail loss


class MouthBankRenderer(LipsyncRenderer):
    name = "mouth-bank"
    supports_portrait = True

    def __init__(self, feather: float = 0.07, crossfade: bool = True):
        self.feather = float(feather)  # of the inter-ocular distance
        self.crossfade = bool(crossfade)

    def fingerprint(self) -> str:

        return fingerprint(self.name, VERSION, bank.BANK_VERSION, self.feather, self.crossfade, select.HOLD,
                           select.CLOSURE_WEIGHT, select.JUMP, visemes.GENERIC, visemes.DOMINANCE, portrait.OPEN_OF_WIDTH,
                           portrait.BLINK_GAP, portrait.MOTION_PX)

    def render(
        self,
        video: Path,
        track: FaceTrack,
        dub_phonemes: Sequence[Phoneme],
        source_phonemes: Sequence[Phoneme],
        out_video: Path,
        *,
        audio: Path | None = None,
        preset: str = "veryfast",
        crf: int = 18,
        progress: ProgressCallback | None = None,
        portrait: bool = False,
    ) -> LipsyncResult:
        """portrait=True: the source is a still photo turned into a video (every frame the same): no bank;
        the photo's mouth is warped, its interior synthesised, blinks and slight head motion added."""
        if portrait:

            return render_portrait(Path(video), track, dub_phonemes, Path(out_video), preset, crf, progress,
                                   self.feather, self.name)
        from dubforge.lipsync.select import select

        info = probe(video)
        # Landmarks and poses: a window at a time (Landmarks, Poses); the rest compact (perframe): flat in length.
        arrays = load_compact(track)
        times, valid, n = arrays["times"], arrays["valid"].copy(), track.frame_count
        warnings: list[str] = []
        visemes, sync = "generic", None
        plan = None
        if not valid.any():
            warnings.append(f"{video}: no usable face in any frame ({track.reason}); video passed through unchanged")
        else:
            bank = load_or_build(Path(video), track)
            marks = Landmarks(track, arrays["pose"])
            desc = marks.descriptors()
            segment, identity = arrays["segment"], arrays["identity"]
            shot, occluded = arrays["shot"], arrays["occluded"]
            targets = np.zeros((n, 3))
            closed = np.zeros(n, bool)
            path = np.full(n, -1, np.int32)  # bank units: fewer than MAX_UNITS
            fade = np.zeros(n)
            unit_seg = segment[bank.frames]
            for person in np.unique(identity[valid]):
                # Each person speaks with their own mouth: their range, their visemes, their bank units.
                mine = valid & (identity == person)
                rng = Range.from_descriptors(desc[mine])
                person_sync = source_sync(source_phonemes, times, desc[:, 0], mine)
                if person_sync is not None and (sync is None or person_sync > sync):
                    sync = person_sync
                if person_sync is not None and person_sync >= SYNC_MIN:
                    shapes, visemes = learned_shapes(rng, source_phonemes, times, desc, mine), "speaker"
                else:
                    shapes = generic_shapes(rng)
                t, cl = trajectory(dub_phonemes, times, shapes)
                targets[mine], closed[mine] = t[mine], cl[mine]
                units = np.flatnonzero(identity[bank.frames] == person)
                if not len(units):
                    valid[mine] = False
                    continue
                consecutive = np.zeros(len(units), bool)
                consecutive[1:] = (np.diff(bank.frames[units]) == 1) & (np.diff(unit_seg[units]) == 0)
                for a, b in spans(np.where(mine, segment, -1)):
                    path[a:b] = units[select(bank.desc[units], targets[a:b], closed[a:b], rng, consecutive)]
                    ramp = np.ones(b - a)
                    k = min(FADE_FRAMES, (b - a) // 2)
                    # Fade only where a face appears or leaves within a shot: at a cut the picture changes anyway,
                    # and an occluder hides the switch itself.
                    if a > 0 and k and shot[a] == shot[a - 1] and not occluded[a - 1]:
                        ramp[:k] = np.arange(1, k + 1) / (k + 1)
                    if b < n and k and shot[b] == shot[b - 1] and not occluded[b]:
                        ramp[-k:] = np.minimum(ramp[-k:], np.arange(k, 0, -1) / (k + 1))
                    # A bilabial is shown closed even while the mouth fades in or out: half a closure reads as open.
                    fade[a:b] = np.where(closed[a:b], 1.0, ramp)
            if visemes == "generic" and source_phonemes:
                warnings.append(
                    "source speech does not move with the footage's mouth "
                    + (f"(r={sync:.2f})" if sync is not None else "(too few phonemes)")
                    + "; using generic viseme shapes scaled to the speaker's range")
            # The new mouth's texture is matched to the source's before encoding, plus what the re-encode
            # will remove from it (but not from the source it is compared with): measured, not guessed.
            margin = 1.0 / encode_loss(Path(video), track, arrays, marks, preset, crf)
            plan = (bank, marks, targets, closed, path, fade, margin)

        rendered = 0
        with atomic_path(Path(out_video)) as tmp:
            with H264Writer(tmp, info, preset=preset, crf=crf) as writer:
                with EncodeThread(writer) as pipe:
                    state: dict = {}
                    for i, frame in enumerate(prefetched(frames(video))):
                        slot = pipe.acquire()
                        copy_into(frame, slot[1])
                        if plan is not None and i < n and valid[i]:
                            if state.get("segment") != arrays["segment"][i]:
                                state.clear()  # a new shot or person: no colour/texture memory carried over
                                state["segment"] = arrays["segment"][i]
                            self._render_frame(slot[1], i, arrays, plan, state)
                            rendered += 1
                        else:
                            state.clear()
                        pipe.submit(slot, frame.pts)
                        if progress:
                            progress(i + 1, n)
                count = writer.count
        return finish_render(video, out_video, n, count, rendered, warnings, count_passed=plan is not None,
                             visemes=visemes, source_sync=sync, backend=self.name)

    def _render_frame(self, planes, i: int, arrays, plan, state: dict) -> None:

        bank, marks, targets, closed, path, fade, margin = plan
        height, width = planes[0].shape
        pose = arrays["pose"][i]
        inv = g.invert(pose)
        cur_px, cur_c = marks.points(i), marks.canon(i)
        iod_px = 1.0 / np.hypot(pose[0, 0], pose[1, 0])
        feather = self.feather * iod_px
        polygon = g.apply(inv, c.mask_polygon(cur_c))
        box = c.region(polygon, width, height, int(feather) + 2)
        if box is None:
            return
        units = [int(path[i])]
        prev = int(path[i - 1]) if i > 0 and path[i - 1] >= 0 and arrays["segment"][i - 1] == arrays["segment"][i] else -1
        if self.crossfade and prev >= 0 and units[0] not in (prev, prev + 1) and not closed[i]:
            # A jump: show half of where the previous unit was going for one frame.
            units.append(prev + 1 if prev + 1 < len(bank.frames) and bank.consecutive[prev + 1] else prev)
        warped: tuple[np.ndarray, np.ndarray] | None = None
        for u in units:
            lips = c.target_lips(bank.canon[u], cur_c, targets[i], bool(closed[i]))
            dst = np.vstack([g.apply(inv, lips), cur_px[c._ANCHORS]])
            src = bank.to_crop(u, np.vstack([bank.canon[u][c._LIPS], bank.canon[u][c._ANCHORS]]))
            w = c.warp_unit(bank.luma[u], bank.chroma[u], c.tps_fit(dst, src), box)
            warped = w if warped is None else (0.5 * (warped[0] + w[0]), 0.5 * (warped[1] + w[1]))
        assert warped is not None  # `units` holds one or two bank frames
        mx0, my0, mx1, my1 = mouth_box(cur_px, width, height) or box
        mouth = (max(mx0 - box[0], 0), max(my0 - box[1], 0), min(mx1, box[2]) - box[0], min(my1, box[3]) - box[1])
        source_mouth = planes[0][box[1] + mouth[1]: box[1] + mouth[3], box[0] + mouth[0]: box[0] + mouth[2]]
        warped = (c.sharpen_to_match(warped[0], source_mouth.astype(np.float32), mouth, state, margin), warped[1])
        alpha = c.alpha_mask(polygon, box, feather) * float(fade[i])
        c.blend(planes, warped, alpha, box, state)


def mouth_box(points_px: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The scorecard's sharpness box: the lips plus 15% of the mouth width."""

    lips = points_px[c._LIPS]
    return c.region(lips, width, height, int(0.15 * np.ptp(lips[:, 0])))


def encode_loss(video: Path, track: FaceTrack, arrays: dict, marks: Landmarks, preset: str, crf: int) -> float:
    """calibrate(), measured once per source video, preset and crf (cached beside the face track)."""
    path = Path(track.npz).with_name(f"encode-loss-{fingerprint(Path(track.npz), preset, crf, CALIBRATION_FRAMES)}.json")
    if path.is_file():
        return float(json.loads(path.read_text())["encode_loss"])
    loss = calibrate(video, arrays, marks, preset, crf)
    write_json_atomic(path, {"encode_loss": loss})
    return loss


def calibrate(video: Path, arrays: dict, marks: Landmarks, preset: str, crf: int) -> float:
    """x264's detail loss in the mouth box on this video at this preset and crf (see compose.encode_loss),
    from up to CALIBRATION_FRAMES consecutive usable frames at the start of the first long face run."""

    spans = [(a, b) for a, b in runs(arrays["valid"])]
    if not spans:
        return 1.0
    a, b = max(spans, key=lambda r: r[1] - r[0])
    b = min(b, a + CALIBRATION_FRAMES)
    buffers, boxes = [], []
    for i, frame in enumerate(frames(video)):
        if i >= b:
            break
        if i >= a:
            buf, y, _, _ = yuv_planes(frame)
            box = mouth_box(marks.points(i), y.shape[1], y.shape[0])
            if box is not None:
                buffers.append(buf)
                boxes.append(box)
    return c.encode_loss(buffers, boxes, preset, crf)


def source_sync(phonemes: Sequence[Phoneme], times: np.ndarray, opening: np.ndarray, valid: np.ndarray,
                max_lag: int = 3) -> float | None:
    """Best correlation (over small lags) of the source mouth opening with the opening its own phonemes
    imply; None when there is too little speech to tell."""

    speech = [s for s in segments(phonemes) if s[0] != SIL]
    if len(speech) < 10:
        return None
    ref = reference_opening(phonemes, times)
    span = valid & (times >= speech[0][1] - 0.2) & (times <= speech[-1][2] + 0.2)
    return g.best_lag(opening, ref, span, max_lag)[1]
