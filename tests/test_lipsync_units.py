"""Lip-sync building blocks on known answers (no video, no face detector)."""

from __future__ import annotations

import numpy as np
import pytest

from dubforge.core.contracts import Phoneme
from dubforge.lipsync import compose, visemes
from dubforge.lipsync.geometry import best_lag
from dubforge.lipsync.score import closure
from dubforge.lipsync.select import viterbi

FPS = 30.0
TIMES = np.arange(90) / FPS
RANGE = visemes.Range(closed=0.0, rest=0.03, open=0.4, rest_width=0.55, widest=0.62, roundest=0.45,
                      outer_a=0.2, outer_b=0.9, lip=0.1)


def ph(*items: tuple[str, float, float]) -> list[Phoneme]:
    return [Phoneme(symbol=s, start=a, end=b) for s, a, b in items]


def test_viseme_classes_for_ipa_and_arpabet():
    assert [visemes.viseme(s) for s in ("m", "b", "p", "M", "B1", "P")] == ["PBM"] * 6
    assert visemes.viseme("f") == visemes.viseme("V") == "FV"
    assert visemes.viseme("uː") == visemes.viseme("UW1") == "W"
    assert visemes.viseme("ɑ") == visemes.viseme("AA1") == "AA"
    assert visemes.viseme("tʃ") == visemes.viseme("CH") == "SH"
    assert visemes.viseme("ː") is None  # a length mark extends the sound before it
    assert visemes.viseme("SIL") == visemes.viseme(" ") == visemes.viseme(".") == visemes.SIL
    merged = visemes.segments(ph(("i", 0.1, 0.2), ("ː", 0.2, 0.3)))
    assert merged == [("IY", 0.1, 0.3)]


def test_trajectory_closes_bilabials_rounds_early_and_relaxes():
    shapes = visemes.generic_shapes(RANGE)
    # "ma" ... "u" after a pause; a 20 ms /b/ shorter than a frame still closes its nearest frame.
    phones = ph(("m", 0.50, 0.58), ("ɑ", 0.58, 0.75), ("b", 0.751, 0.771), ("ɑ", 0.771, 0.9),
                ("t", 1.6, 1.65), ("u", 1.65, 1.85))
    target, closed = visemes.trajectory(phones, TIMES, shapes)
    assert closed[round(0.54 * FPS)] and closed[round(0.761 * FPS)]
    assert target[closed, 0].max() == 0.0
    assert target[round(0.68 * FPS), 0] > 0.6 * RANGE.open  # the vowel opens
    # Rounding anticipates: width already narrows during the /t/ before the /u/.
    assert target[round(1.62 * FPS), 1] < RANGE.rest_width - 0.3 * (RANGE.rest_width - RANGE.roundest)
    # Silence relaxes to rest, far from speech.
    rest = shapes.target(visemes.SIL)
    assert np.allclose(target[round(0.1 * FPS)], rest, atol=1e-3)
    assert np.allclose(target[round(1.3 * FPS), 0], rest[0], atol=0.02)


def test_labiodental_tucks_the_lower_lip():
    shapes = visemes.generic_shapes(RANGE)
    assert shapes.target("FV")[2] < shapes.target("TD")[2] - 0.5 * RANGE.lip


def test_best_lag_and_closure_known_answers():
    rng = np.random.default_rng(0)
    ref = np.convolve(rng.random(120), np.ones(4) / 4, mode="same")
    late = np.roll(ref, 2)
    mask = np.zeros(120, bool)
    mask[10:110] = True
    lag, r = best_lag(late, ref, mask, 5)
    assert lag == 2 and r > 0.99
    lag, r = best_lag(np.full(120, 0.3), ref, mask, 5)  # a mouth that never moves
    assert lag == 0 and r == 0.0
    phones = ph(("m", 0.5, 0.6), ("ɑ", 0.6, 0.8), ("p", 1.0, 1.1))
    opening = np.full(90, 0.3)
    valid = np.ones(90, bool)
    assert closure(opening, TIMES, phones, valid) == 0.0
    opening[round(0.55 * FPS) + 1] = 0.02  # closed one frame after the centre: still counts
    assert closure(opening, TIMES, phones, valid) == 0.5


def test_viterbi_follows_the_source_when_it_fits_and_jumps_when_it_must():
    k = 6
    consecutive = np.array([False, True, True, False, True, True])
    costs = np.full((4, k), 1.0)
    for t, u in enumerate((0, 1, 2, 5)):
        costs[t, u] = 0.0
    path = viterbi(lambda a, b: costs[a:b], 4, consecutive, block=2)
    assert path.tolist() == [0, 1, 2, 5]


def test_blend_changes_nothing_outside_the_mask():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 256, (120, 160), np.uint8)
    u = rng.integers(0, 256, (60, 80), np.uint8)
    v = rng.integers(0, 256, (60, 80), np.uint8)
    before = [p.copy() for p in (y, u, v)]
    poly = np.array([[60, 40], [110, 40], [110, 90], [60, 90]], float)
    box = compose.region(poly, 160, 120, 6)
    alpha = compose.alpha_mask(poly, box, 4)
    h, w = box[3] - box[1], box[2] - box[0]
    warped = (np.full((h, w), 128, np.float32), np.full((h // 2, w // 2, 2), 128, np.float32))
    compose.blend((y, u, v), warped, alpha, box, {})
    inside = np.zeros((120, 160), bool)
    inside[40:91, 60:111] = True
    assert np.array_equal(y[~inside], before[0][~inside])
    assert not np.array_equal(y[inside], before[0][inside])
    half = np.zeros((60, 80), bool)
    half[19:46, 29:56] = True
    assert np.array_equal(u[~half], before[1][~half]) and np.array_equal(v[~half], before[2][~half])


def test_tps_reproduces_its_control_points():
    rng = np.random.default_rng(2)
    dst = rng.random((30, 2)) * 200
    src = dst * 0.8 + 5 + rng.normal(0, 2, dst.shape)
    model = compose.tps_fit(dst, src, reg=0.0)
    assert np.abs(compose.tps_eval(model, dst) - src).max() < 1e-6


@pytest.mark.parametrize("closed", [True, False])
def test_target_lips_open_to_the_target(closed):
    from dubforge.lipsync import geometry as g

    # A synthetic unit mouth: corners at +-0.3, inner gap 0.1, lips 0.08 thick.
    canon = np.zeros((len(g.SUBSET), 2))
    def put(indices, y_of_x):
        xs = np.linspace(-0.3, 0.3, len(indices) + 2)[1:-1] if len(indices) in (9,) else np.linspace(-0.3, 0.3, len(indices))
        for i, x in zip(indices, xs):
            canon[g.sub(i)[0]] = (x, y_of_x(x))
    put(g.UPPER_OUTER, lambda x: 0.92 + 0.3 * x * x)
    put(g.UPPER_INNER, lambda x: 1.0 + 0.1 * x * x)
    put(g.LOWER_INNER, lambda x: 1.1 - 0.5 * x * x)
    put(g.LOWER_OUTER, lambda x: 1.18 - 0.6 * x * x)
    for i, y in ((2, 0.8), (152, 1.6)):
        canon[g.sub(i)[0]] = (0, y)
    lips = compose.target_lips(canon, canon, np.array([0.2, 0.6, 0.5]), closed)
    new = canon.copy()
    new[g.sub(g.LIPS)] = lips
    gap = g.descriptor(new[None])[0, 0]
    assert (gap < 0.01) if closed else abs(gap - 0.2) < 0.02


def _mouths(openings: np.ndarray) -> np.ndarray:
    """Landmark arrays whose opening (gap / width) follows `openings`."""
    from dubforge.lipsync import geometry as g

    pts = np.zeros((len(openings), len(g.SUBSET), 2), np.float32)
    pts[:, g.sub(61)[0]] = (-1, 0)
    pts[:, g.sub(291)[0]] = (1, 0)
    for i in g.sub(87, 14, 317):
        pts[:, i, 1] = 2 * openings
    return pts


def test_the_face_moving_with_the_speech_is_chosen_in_each_shot():
    """Two people taking turns, one shot each: each shot renders its own speaker."""
    from dubforge.lipsync import geometry as g
    from dubforge.lipsync.track import _choose_per_shot, _face_width

    rng = np.random.default_rng(4)
    a, b = rng.random(120), rng.random(120)
    speech = np.concatenate([a[:60], b[60:]])  # A speaks in shot 0, B in shot 1
    present = {0: np.ones(120, bool), 1: np.ones(120, bool)}
    curves = {0: g.opening(_mouths(a)), 1: g.opening(_mouths(b))}
    widths = {f: np.array([_face_width(p) for p in _mouths(x)], np.float32) for f, x in ((0, a), (1, b))}
    shots = np.repeat([0, 1], 60)
    chosen, reason, corr = _choose_per_shot(curves, widths, present, shots, np.log(speech + 0.05))
    assert chosen[:60] == [0] * 60 and chosen[60:] == [1] * 60 and corr > 0.8
    assert "speaking: face 0, face 1" in reason
    chosen, reason, corr = _choose_per_shot(curves, widths, present, np.zeros(120, np.int64), None)
    assert len(set(chosen)) == 1 and "no source speech" in reason and corr is None


def test_duplicate_meshes_merge_and_tracklets_relink_by_appearance():
    from dubforge.lipsync.track import merge_duplicates, relink

    face = np.random.default_rng(1).random((50, 2)) * 100
    assert len(merge_duplicates([face, face + 3, face + 300])) == 2  # a near copy of one face is one face
    sig_a, sig_b = np.zeros(10, np.float32), np.full(10, 3.0, np.float32)
    # Tracklets' signatures and frames: A and B, then A again and B again after a cut.
    sigs = np.stack([sig_a, sig_b, sig_a + 0.05, sig_b - 0.05])
    frames = [np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([5, 6, 7]), np.array([5, 6, 7])]
    assert relink(sigs, frames) == [0, 1, 0, 1]
    # Two look-alikes on screen together stay two people.
    assert relink(np.stack([sig_a, sig_a]), [np.array([0, 1, 2]), np.array([1, 2, 3])]) == [0, 1]
    assert relink(np.stack([sig_a, sig_a]), [np.array([0, 2, 4]), np.array([1, 3, 5])]) == [0, 0]


def test_source_sync_tells_matching_audio_from_a_voice_over():
    from dubforge.models.mouth_bank import source_sync

    words = "m ɑ b i p ɔ f u l ə m ɛ n i t ə m p ɑ".split()
    phones = ph(*[(s, 0.2 + 0.1 * k, 0.3 + 0.1 * k) for k, s in enumerate(words)])
    times = np.arange(90) / FPS
    own = visemes.reference_opening(phones, times) * 0.4
    valid = np.ones(90, bool)
    assert source_sync(phones, times, own, valid) > 0.9
    unrelated = np.random.default_rng(5).random(90)
    assert source_sync(phones, times, unrelated, valid) < 0.35
    assert source_sync(phones[:5], times, own, valid) is None  # too little speech to judge


def test_coverage_verdict_degrades_or_fails_below_the_minimum():
    from dubforge.core.errors import StageError
    from dubforge.core.manifest import Lipsync
    from dubforge.tasks.lipsync import coverage_verdict

    options = Lipsync()
    assert options.min_coverage == 0.9 and options.strict is False
    assert coverage_verdict({"coverage": 0.95, "frames_scored": 100}).status == "ok"
    low = coverage_verdict({"coverage": 0.27, "frames_scored": 300}, 0.9)
    assert low.status == "degraded" and "27%" in low.message and "300" in low.message
    with pytest.raises(StageError, match="lipsync.strict"):
        coverage_verdict({"coverage": 0.27, "frames_scored": 300}, 0.9, strict=True)
    assert coverage_verdict({"coverage": None}).status == "unscored"
