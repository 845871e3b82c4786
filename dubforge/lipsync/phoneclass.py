"""The scorecard's own phone classes: how open the mouth is for each kind of sound.

Kept apart from the renderer's viseme table (`lipsync/visemes.py`) on purpose, so the scorecard does not
grade the renderer by the renderer's rules. The classes follow the standard articulatory description of
jaw and lip aperture (IPA chart: place and manner for consonants, height for vowels), one number per class,
fixed here and never tuned on renders:

    class        openness  sounds
    silence      0.05      pauses, punctuation, sil/sp
    bilabial     0.00      p b m ʙ: the lips touch (the only class `closure` checks)
    lip-narrowed 0.10      ɸ β (Spanish "lobo"): the lips approach without closing
    labiodental  0.10      f v ɱ ʋ: the lower lip meets the teeth
    rounded-glide 0.20     w ʍ ɥ
    coronal      0.25      t d n l s z ʃ ʒ θ ð r ɾ ... (tongue tip/blade; the jaw stays fairly high)
    dorsal       0.35      k g ŋ x ɣ h ʔ j ...
    close vowel  0.35      i ɪ y u ʊ ɯ ɨ ʉ
    mid vowel    0.65      e ɛ ø œ ə ɘ ɵ ɜ o ɔ ɤ ʌ ɚ ɝ
    open vowel   1.00      a ɑ æ ɐ ɒ ɶ

ARPAbet symbols map to the same classes. A frame's reference openness is the class value of the sound
spanning its time, then smoothed with a 40 ms Gaussian (the mouth cannot jump between frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from dubforge.core.contracts import Phoneme

OPENNESS = {
    "silence": 0.05, "bilabial": 0.0, "lip-narrowed": 0.10, "labiodental": 0.10, "rounded-glide": 0.20, "coronal": 0.25,
    "dorsal": 0.35, "close": 0.35, "mid": 0.65, "open": 1.0,
}
SMOOTH_S = 0.04
_CLASS_OF_CHAR = {
    **dict.fromkeys("pbmʙ", "bilabial"),
    **dict.fromkeys("ɸβ", "lip-narrowed"),
    **dict.fromkeys("fvɱʋ", "labiodental"),
    **dict.fromkeys("wʍɥ", "rounded-glide"),
    **dict.fromkeys("tdnlszʃʒθðrɾɹɻɫɬɮʂʐɕʑʈɖɳɭɲʎʀ", "coronal"),
    **dict.fromkeys("kgɡŋxɣqɢχʁhɦħʕʔjçʝ", "dorsal"),
    **dict.fromkeys("iɪyʏuʊɯɨʉ", "close"),
    **dict.fromkeys("eɛøœəɘɵɜɞoɔɤʌɚɝ", "mid"),
    **dict.fromkeys("aɑæɐɒɶ", "open"),
}
_ARPA = {
    **dict.fromkeys(("P", "B", "M"), "bilabial"), **dict.fromkeys(("F", "V"), "labiodental"),
    "W": "rounded-glide",
    **dict.fromkeys(("T", "D", "N", "L", "S", "Z", "SH", "ZH", "CH", "JH", "TH", "DH", "R"), "coronal"),
    **dict.fromkeys(("K", "G", "NG", "HH", "Y"), "dorsal"),
    **dict.fromkeys(("IY", "IH", "UW", "UH"), "close"),
    **dict.fromkeys(("EH", "EY", "AH", "ER", "OW", "OY", "AO"), "mid"),
    **dict.fromkeys(("AA", "AE", "AW", "AY"), "open"),
}
_SILENT = {"", "sil", "sp", "spn", "pau", "_", "#"}


def phone_class(symbol: str) -> str | None:
    """Class of one phone; None for a symbol that only modifies the sound before it (length, stress)."""
    s = symbol.strip()
    if s.lower() in _SILENT or all(c in ".,;:!?-—…()\"'^$ " for c in s):
        return "silence"
    arpa = s.rstrip("012")
    if arpa.isascii() and arpa.isalpha() and arpa.isupper():
        return _ARPA.get(arpa, "mid")
    for ch in s:
        if ch in _CLASS_OF_CHAR:
            return _CLASS_OF_CHAR[ch]
    return None


def spans(phonemes: Sequence[Phoneme]) -> list[tuple[str, float, float]]:
    """(class, start, end) per phone in time order; modifiers extend the phone before them."""
    out: list[tuple[str, float, float]] = []
    for p in sorted(phonemes, key=lambda p: p.start):
        k = phone_class(p.symbol)
        if k is None:
            if out:
                out[-1] = (out[-1][0], out[-1][1], max(out[-1][2], p.end))
            continue
        out.append((k, p.start, max(p.end, p.start)))
    return out


def openness(phonemes: Sequence[Phoneme], times: np.ndarray) -> np.ndarray:
    """Reference mouth openness (0..1) at each frame time."""
    out = np.full(len(times), OPENNESS["silence"])
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
    for k, start, end in spans(phonemes):
        inside = (times >= start) & (times < end)
        out[inside] = OPENNESS[k]
        if not inside.any() and len(times):  # shorter than a frame: its nearest frame
            out[int(np.argmin(np.abs(times - (start + end) / 2)))] = OPENNESS[k]
    return gaussian_filter1d(out, SMOOTH_S / step, mode="nearest") if len(out) > 2 else out


def bilabials(phonemes: Sequence[Phoneme]) -> list[float]:
    """Centre time of every bilabial stop or nasal (p b m): the sounds that close the lips."""
    return [(a + b) / 2 for k, a, b in spans(phonemes) if k == "bilabial"]


def speaking(phonemes: Sequence[Phoneme], times: np.ndarray, bridge: float = 0.3) -> np.ndarray:
    """Frames where the dub speaks: inside a sounding phone, or in a pause shorter than `bridge` seconds."""
    out = np.zeros(len(times), bool)
    sounding = [(a, b) for k, a, b in spans(phonemes) if k != "silence"]
    merged: list[list[float]] = []
    for a, b in sounding:
        if merged and a - merged[-1][1] <= bridge:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    for a, b in merged:
        out |= (times >= a) & (times <= b)
    return out
