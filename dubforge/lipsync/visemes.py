"""Phonemes (IPA or ARPAbet) -> viseme classes -> mouth-shape targets at the video's frame times.

A target is (o, w, t): opening as a fraction of the speaker's range (0 closed .. 1 widest open),
width from -1 (roundest) through 0 (rest) to +1 (widest), and lower-lip tuck (labiodentals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from dubforge.core.contracts import Phoneme

SIL = "sil"
GENERIC: dict[str, tuple[float, float, float]] = {
    SIL: (0.06, 0.0, 0.0), "PBM": (0.0, 0.0, 0.0), "FV": (0.04, 0.1, 1.0), "TH": (0.22, 0.1, 0.0),
    "TD": (0.25, 0.15, 0.0), "SZ": (0.12, 0.35, 0.0), "SH": (0.2, -0.5, 0.0), "KG": (0.35, 0.1, 0.0),
    "R": (0.2, -0.45, 0.0), "W": (0.14, -1.0, 0.0), "AA": (1.0, 0.1, 0.0), "EH": (0.7, 0.4, 0.0),
    "IY": (0.35, 0.7, 0.0), "AO": (0.75, -0.6, 0.0), "UH": (0.35, -0.6, 0.0), "AH": (0.65, 0.0, 0.0),
    "ER": (0.45, -0.3, 0.0), "HH": (0.4, 0.0, 0.0),
}
VISEMES = tuple(GENERIC)
# How strongly each class holds its shape against its neighbours (open, width): lips-only sounds dominate the
# width; tongue sounds borrow the lips' width from the vowels around them but not their opening (the jaw rises
# for a tongue tip or back to reach the palate), and a pause relaxes the mouth.
DOMINANCE: dict[str, tuple[float, float]] = {
    SIL: (1.0, 0.5), "PBM": (1.0, 0.6), "FV": (1.5, 0.6), "TH": (1.0, 0.3), "TD": (1.0, 0.2),
    "SZ": (1.2, 0.6), "SH": (0.8, 1.2), "KG": (0.8, 0.2), "R": (0.6, 1.2), "W": (1.2, 2.0),
    "AA": (1.5, 0.8), "EH": (1.5, 0.8), "IY": (1.2, 1.0), "AO": (1.5, 1.5), "UH": (1.2, 1.5),
    "AH": (1.5, 0.6), "ER": (1.2, 1.0), "HH": (0.5, 0.1),
}
ROUNDED = {"W", "AO", "UH", "SH", "R", "ER"}
VOWELS = {"AA", "EH", "IY", "AO", "UH", "AH", "ER", "W"}
# Seconds: consonants release quickly, vowels spread further; rounding starts early (anticipation).
TAU_VOWEL, TAU_CONSONANT, TAU_ROUND_BEFORE = 0.06, 0.03, 0.14
BILABIAL = "PBM"
PAUSE = 0.15  # seconds without a sound that count as a pause
# Seconds the lips close before a bilabial's span, and stay closed after it: only briefly, the lips open at the
# release, where the next sound is heard.
CLOSURE_PAD, RELEASE_PAD = 0.02, 0.01

_IPA = {
    "p": "PBM", "b": "PBM", "m": "PBM", "ɸ": "PBM", "β": "PBM", "ʙ": "PBM",
    "f": "FV", "v": "FV", "ɱ": "FV", "ʋ": "FV",
    "θ": "TH", "ð": "TH",
    "t": "TD", "d": "TD", "n": "TD", "l": "TD", "ɾ": "TD", "ɫ": "TD", "ɗ": "TD", "ʈ": "TD", "ɖ": "TD",
    "ɳ": "TD", "ɲ": "TD", "ʎ": "TD", "ɭ": "TD",
    "s": "SZ", "z": "SZ", "ɕ": "SH", "ʑ": "SH", "ʂ": "SH", "ʐ": "SH", "ʃ": "SH", "ʒ": "SH", "ç": "SZ",
    "k": "KG", "g": "KG", "ɡ": "KG", "ŋ": "KG", "x": "KG", "ɣ": "KG", "q": "KG", "ɢ": "KG", "ʔ": "KG",
    "h": "HH", "ɦ": "HH", "χ": "KG", "ʁ": "R", "ħ": "HH", "ʕ": "HH",
    "ɹ": "R", "r": "R", "ɻ": "R", "ʀ": "R",
    "w": "W", "ʍ": "W", "u": "W", "ɥ": "W", "ɯ": "UH", "y": "W", "ʉ": "W",
    "ɑ": "AA", "a": "AA", "ɐ": "AH", "ɒ": "AO", "æ": "EH", "ɶ": "AA",
    "e": "EH", "ɛ": "EH", "ø": "UH", "œ": "AO", "ɜ": "ER", "ɞ": "AO",
    "i": "IY", "ɪ": "IY", "j": "IY", "ɨ": "IY", "ʏ": "UH",
    "o": "AO", "ɔ": "AO", "ɤ": "AH", "ʊ": "UH", "ʌ": "AH", "ə": "AH", "ɘ": "AH", "ɵ": "UH",
    "ɚ": "ER", "ɝ": "ER",
}
_ARPA = {
    "P": "PBM", "B": "PBM", "M": "PBM", "F": "FV", "V": "FV", "TH": "TH", "DH": "TH",
    "T": "TD", "D": "TD", "N": "TD", "L": "TD", "S": "SZ", "Z": "SZ",
    "SH": "SH", "ZH": "SH", "CH": "SH", "JH": "SH", "K": "KG", "G": "KG", "NG": "KG", "HH": "HH",
    "R": "R", "W": "W", "Y": "IY", "AA": "AA", "AE": "EH", "AH": "AH", "AO": "AO", "AW": "AA",
    "AY": "AA", "EH": "EH", "ER": "ER", "EY": "EH", "IH": "IY", "IY": "IY", "OW": "AO", "OY": "AO",
    "UH": "UH", "UW": "W",
}
_LENGTH = "ː"
_IGNORE = set("ˈˌ'̃ʰʲʷ̩̯͡‿ˑ")


def viseme(symbol: str) -> str | None:
    """Viseme class of one phoneme; SIL for pauses; None for a length mark (continue the previous sound)."""
    s = symbol.strip()
    if not s or s in {"SIL", "sil", "sp", "spn"} or s.startswith("+") or all(c in ".,;:!?-—…()\"^$_" for c in s):
        return SIL
    if s == _LENGTH:
        return None
    arpa = s.rstrip("012")
    if arpa.isascii() and arpa.isupper():
        return _ARPA.get(arpa, "AH")
    if s.startswith(("tʃ", "dʒ", "ʧ", "ʤ")):
        return "SH"
    for ch in s:
        if ch in _IGNORE or ch == _LENGTH:
            continue
        if ch in _IPA:
            return _IPA[ch]
    return "AH" if any(c.isalpha() for c in s) else SIL


def segments(phonemes: Sequence[Phoneme]) -> list[tuple[str, float, float]]:
    """(class, start, end) with length marks merged into the sound before and pauses kept as SIL."""
    out: list[tuple[str, float, float]] = []
    for p in sorted(phonemes, key=lambda p: p.start):
        v = viseme(p.symbol)
        if v is None:
            if out:
                out[-1] = (out[-1][0], out[-1][1], max(out[-1][2], p.end))
            continue
        if out and out[-1][0] == v == SIL:
            out[-1] = (SIL, out[-1][1], max(out[-1][2], p.end))
        else:
            out.append((v, p.start, max(p.end, p.start)))
    return out


def reference_opening(phonemes: Sequence[Phoneme], times: np.ndarray) -> np.ndarray:
    """The scorecard's target opening curve: generic openness per sound, held over its span and
    smoothed by one frame; rest openness outside speech. Independent of the renderer's coarticulation."""

    out = np.full(len(times), GENERIC[SIL][0])
    for v, start, end in segments(phonemes):
        out[(times >= start) & (times < end)] = GENERIC[v][0]
        if end - start < _frame(times):  # too short to cover a frame time: mark its nearest frame
            out[np.argmin(np.abs(times - (start + end) / 2))] = GENERIC[v][0]
    return gaussian_filter1d(out, 1.0, mode="nearest") if len(out) > 2 else out


def _frame(times: np.ndarray) -> float:
    return float(np.median(np.diff(times))) if len(times) > 1 else 1 / 25


@dataclass(frozen=True)
class Shapes:
    """The speaker's mouth shapes in canonical units: a descriptor [open, width, outer] per viseme."""

    table: dict[str, np.ndarray]
    source: str  # "speaker" or "generic"

    def target(self, v: str) -> np.ndarray:
        return self.table[v]


@dataclass(frozen=True)
class Range:
    """The speaker's observed mouth range (from landmarks only)."""

    closed: float
    rest: float
    open: float
    rest_width: float
    widest: float
    roundest: float
    outer_a: float  # outer lip height ~ outer_a + outer_b * open
    outer_b: float
    lip: float  # thickness of the lower lip (outer height at closure - upper lip)

    @classmethod
    def from_descriptors(cls, desc: np.ndarray) -> Range:
        o, w, h = desc[:, 0], desc[:, 1], desc[:, 2]
        closed, top = float(np.percentile(o, 2)), float(np.percentile(o, 98))
        low = o <= np.percentile(o, 30)
        b, a = np.polyfit(o, h, 1) if np.ptp(o) > 1e-6 else (1.0, float(h.mean()))
        rest_w = float(np.median(w[low]))
        return cls(closed=closed, rest=float(np.median(o[low])), open=max(top, closed + 1e-3),
                   rest_width=rest_w, widest=max(float(np.percentile(w, 98)), rest_w * 1.02),
                   roundest=min(float(np.percentile(w, 2)), rest_w * 0.95), outer_a=float(a),
                   outer_b=float(b), lip=float(a) * 0.5)

    def descriptor(self, o: float, w: float, t: float) -> np.ndarray:
        opening = 0.0 if o <= 0 else self.closed + o * (self.open - self.closed)
        width = self.rest_width + (w * (self.widest - self.rest_width) if w > 0 else w * (self.rest_width - self.roundest))
        outer = self.outer_a + self.outer_b * opening - t * self.lip
        return np.array([opening, width, outer])


def generic_shapes(rng: Range) -> Shapes:
    return Shapes({v: rng.descriptor(*GENERIC[v]) for v in VISEMES}, "generic")


def learned_shapes(rng: Range, phonemes: Sequence[Phoneme], times: np.ndarray, desc: np.ndarray,
                   valid: np.ndarray, min_count: int = 3) -> Shapes:
    """Average the speaker's descriptor at the centre of each sound of its own aligned speech."""
    base = generic_shapes(rng).table
    found: dict[str, list[np.ndarray]] = {}
    for v, start, end in segments(phonemes):
        k = int(np.argmin(np.abs(times - (start + end) / 2)))
        if valid[k]:
            found.setdefault(v, []).append(desc[k])
    table = {v: (np.mean(found[v], axis=0) if len(found.get(v, ())) >= min_count else base[v]) for v in VISEMES}
    table["PBM"] = np.array([0.0, table["PBM"][1], table["PBM"][2]])  # bilabials always close fully
    return Shapes(table, "speaker")


def trajectory(phonemes: Sequence[Phoneme], times: np.ndarray, shapes: Shapes) -> tuple[np.ndarray, np.ndarray]:
    """Target descriptors (T, 3) at `times` with dominance-blended coarticulation, and the frames that
    must be fully closed (bilabials). Far from any sound the mouth relaxes to rest."""
    segs = segments(phonemes)
    # Pauses (gaps between sounds, before the first and after the last) pull toward the rest pose.
    if len(times):
        edges = [times[0] - 1.0] + [x for s in segs for x in (s[1], s[2])] + [times[-1] + 1.0]
        for end, start in zip(edges[0::2], edges[1::2]):
            if start - end > PAUSE:
                segs.append((SIL, end + 0.05, start - 0.05))
    rest = shapes.target(SIL)
    n = len(times)
    num = np.zeros((n, 3))
    den = np.zeros((n, 3))
    # A weak rest pull everywhere: silence relaxes toward the rest pose.
    num += 0.02 * rest
    den += 0.02
    closed = np.zeros(n, bool)
    for v, start, end in segs:
        centre = (start + end) / 2
        half = max((end - start) / 2, 1e-3)
        lo, hi = np.searchsorted(times, [start - 0.45, end + 0.45])
        t = times[lo:hi]
        dt = t - centre
        inside = np.abs(dt) <= half
        dist = np.where(inside, 0.0, np.abs(dt) - half)
        base = TAU_VOWEL if v in VOWELS else TAU_CONSONANT
        tau_b = np.array([base, TAU_ROUND_BEFORE if v in ROUNDED else base, base])
        tau = np.where((dt < 0)[:, None], tau_b, base)
        alpha = np.array([DOMINANCE[v][0], DOMINANCE[v][1], DOMINANCE[v][0]])
        dom = alpha * np.exp(-dist[:, None] / tau)
        num[lo:hi] += dom * shapes.target(v)
        den[lo:hi] += dom
        if v == BILABIAL:
            closed[lo:hi] |= (dt >= -half - CLOSURE_PAD) & (dt <= half + RELEASE_PAD)
            if n:  # even a bilabial shorter than a frame closes the frame nearest its centre
                closed[int(np.argmin(np.abs(times - centre)))] = True
    target = num / den
    target[closed, 0] = 0.0
    return target, closed
