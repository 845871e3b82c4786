"""English word + phoneme forced alignment with pocketsphinx 5 (acoustic model and CMUdict ship in the wheel).

Each segment's audio (plus a little padding) is aligned against its own text: a first pass over the
words, then a sub-word pass that gives ARPAbet phones with 10 ms frame times. Words missing from the
dictionary get a rough letter-to-sound pronunciation so they still take part in the alignment.
When a segment cannot be aligned, its words are spread over the segment by length, with a warning.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from dubforge.core.contracts import Phoneme, Segment, Word
from dubforge.core.errors import StageError
from dubforge.core.files import fingerprint
from dubforge.core.languages import base_language
from dubforge.media.audio import WavReader, resample, to_channels
from dubforge.models.base import Aligner

log = logging.getLogger(__name__)

FRAME = 0.01  # pocketsphinx frame shift, seconds
RATE = 16_000
_ALGORITHM = 1  # bump when the alignment logic changes output for the same input

_DECODERS: dict[tuple[str | None, str | None], Any] = {}
_LOCK = threading.Lock()


class PocketsphinxAligner(Aligner):
    name = "pocketsphinx"

    def __init__(self, model: str | None = None, dictionary: str | None = None, padding: float = 0.15):
        """`model`: a pocketsphinx acoustic model folder, `dictionary`: a CMUdict-format file;
        both default to the US English ones in the pocketsphinx wheel."""
        self.model = model
        self.dictionary = dictionary
        self.padding = float(padding)

    def fingerprint(self) -> str:

        def content(path: str | None) -> Any:
            if path is None:
                return "bundled en-us"
            p = Path(path)
            return sorted((f.name, Path(f)) for f in p.iterdir() if f.is_file()) if p.is_dir() else p

        return fingerprint(
            "pocketsphinx", version("pocketsphinx"), content(self.model), content(self.dictionary),
            self.padding, _ALGORITHM,
        )

    def _decoder(self) -> Any:
        key = (self.model, self.dictionary)
        if key not in _DECODERS:
            from pocketsphinx import Decoder

            options: dict[str, Any] = {"samprate": RATE, "bestpath": False, "loglevel": "FATAL"}
            for option, path in (("hmm", self.model), ("dict", self.dictionary)):
                if path is not None:
                    if not Path(path).exists():
                        raise StageError(f"pocketsphinx {option} not found: {path}")
                    options[option] = str(path)
            try:
                _DECODERS[key] = Decoder(**options)
            except Exception as exc:  # bad model folders surface here
                raise StageError(f"pocketsphinx could not load its model ({options}): {exc}") from exc
        return _DECODERS[key]

    def align(self, speech_wav: Path, segments: Sequence[Segment], language: str) -> tuple[Segment, ...]:

        if base_language(language) != "en":
            raise StageError(
                f"the pocketsphinx aligner has only an English model; cannot align {language!r} "
                "(choose another align backend or skip alignment for this language)"
            )
        try:
            reader = WavReader(Path(speech_wav))  # each segment's clip is read on its own: memory is a segment
        except (OSError, ValueError) as exc:
            raise StageError(f"{speech_wav}: cannot read WAV for alignment: {exc}") from exc
        with _LOCK:
            return tuple(self._align_segment(reader, seg) for seg in segments)

    def _align_segment(self, reader: WavReader, seg: Segment) -> Segment:
        decoder = self._decoder()
        words = [(raw, tokenize(raw)) for raw in seg.text.split()]
        words = [(raw, toks) for raw, toks in words if toks]
        if not words:
            return seg.model_copy(update={"words": ()})
        prons = [[_pronounce(decoder, t) for t in toks] for _, toks in words]
        start = max(0.0, seg.start - self.padding)
        end = min(reader.frames / reader.rate, seg.end + self.padding)
        first = int(round(start * reader.rate))
        audio = reader.read(first, max(0, int(round(end * reader.rate)) - first))
        mono = resample(to_channels(audio, 1), reader.rate, RATE)[:, 0]
        clip = (np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)
        try:
            aligned = _force_align(decoder, clip, [t for _, toks in words for t in toks])
        except Exception as exc:
            if not isinstance(exc, RuntimeError):  # the decoder may be mid-utterance: start afresh
                _DECODERS.pop((self.model, self.dictionary), None)
            log.warning("alignment failed for segment %.2f-%.2f %r (%s); spreading words by length",
                        seg.start, seg.end, seg.text, exc)
            return seg.model_copy(update={"words": _spread(seg, words, prons)})
        out, i = [], 0
        for raw, toks in words:
            parts = aligned[i : i + len(toks)]
            i += len(toks)
            phones = tuple(
                Phoneme(symbol=p, start=round(start + a * FRAME, 3), end=round(start + b * FRAME, 3))
                for _, _, _, ph in parts for p, a, b in ph
            )
            out.append(Word(text=_display(raw), start=round(start + parts[0][1] * FRAME, 3),
                            end=round(start + parts[-1][2] * FRAME, 3), phonemes=phones))
        return seg.model_copy(update={"words": tuple(out)})


def _force_align(decoder: Any, clip: np.ndarray, tokens: list[str]) -> list[tuple[str, int, int, list]]:
    """-> per token (name, start frame, end frame, [(phone, start, end)]); raises RuntimeError on failure."""
    if len(clip) < RATE // 10:
        raise RuntimeError("segment audio shorter than 0.1 s")
    data = clip.tobytes()
    decoder.set_align_text(" ".join(tokens))
    for second_pass in (False, True):
        if second_pass:
            decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(data, full_utt=True)
        decoder.end_utt()
    alignment = decoder.get_alignment()
    if alignment is None:
        raise RuntimeError("no alignment found")
    result = []
    for word in alignment:
        name = re.sub(r"\(\d+\)$", "", word.name)
        if name in ("<sil>", "<s>", "</s>") or name.startswith("++"):
            continue
        phones = [(re.sub(r"\d", "", p.name), p.start, p.start + p.duration) for p in word if p.name != "SIL"]
        result.append((name, word.start, word.start + word.duration, phones))
    if [r[0] for r in result] != tokens:
        raise RuntimeError(f"aligned words {[r[0] for r in result]} differ from {tokens}")
    return result


def _spread(seg: Segment, words: list[tuple[str, list[str]]], prons: list[list[list[str]]]) -> tuple[Word, ...]:
    """Fallback: share the segment's time among words by letter count, phones evenly within each word."""
    weights = [sum(len(t) for t in toks) for _, toks in words]
    total, t, out = sum(weights), seg.start, []
    for (raw, _), weight, pron in zip(words, weights, prons):
        w_end = t + seg.duration * weight / total
        phones = [p for token_phones in pron for p in token_phones]
        step = (w_end - t) / max(len(phones), 1)
        out.append(Word(
            text=_display(raw), start=round(t, 3), end=round(w_end, 3),
            phonemes=tuple(Phoneme(symbol=p, start=round(t + k * step, 3), end=round(t + (k + 1) * step, 3))
                           for k, p in enumerate(phones)),
        ))
        t = w_end
    return tuple(out)


def _display(raw: str) -> str:
    return re.sub(r"^[^\w']+|[^\w']+$", "", raw) or raw


def _pronounce(decoder: Any, token: str) -> list[str]:
    """Dictionary pronunciation of `token`; unknown words get letter-to-sound phones added to the decoder."""
    phones = decoder.lookup_word(token)
    if phones is None:
        phones = " ".join(letter_to_sound(token))
        try:
            decoder.add_word(token, phones, True)
        except RuntimeError:  # left out of the dictionary: the segment then falls back to spreading
            log.warning("pocketsphinx refused the word %r (%s)", token, phones)
    return phones.split()


# --- text normalisation -------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
_ABBREVIATIONS = {"dr": ["doctor"], "vs": ["versus"], "jr": ["junior"], "sr": ["senior"]}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "$": " dollars ", "€": " euros "}


def spell_number(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + (spell_number(n % 10) if n % 10 else [])
    for value, name in _SCALES:
        if n >= value:
            rest = spell_number(n % value) if n % value else []
            return spell_number(n // value) + [name] + rest
    return []


def _spell_digits(text: str) -> list[str]:
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?(st|nd|rd|th)?", text.replace(",", ""))
    if not match or len(match[1]) > 12:
        return [_ONES[int(d)] for d in text if d.isdigit()]
    n = int(match[1])
    if len(match[1]) == 4 and "," not in text and not match[2] and not match[3] and (1100 <= n < 2000 or 2010 <= n < 2100):
        high, low = divmod(n, 100)  # read as a year: "nineteen ninety nine", "twenty ten"
        return spell_number(high) + (["hundred"] if low == 0 else ["oh"] * (low < 10) + spell_number(low))
    words = spell_number(n)
    if match[2]:
        words += ["point"] + [_ONES[int(d)] for d in match[2]]
    elif match[3]:
        last = words[-1]
        words[-1] = _ORDINAL.get(last, (last[:-1] + "ieth") if last.endswith("y") else last + "th")
    return words


def tokenize(raw: str) -> list[str]:
    """One written word -> lowercase dictionary tokens ("Bob's" -> ["bob's"], "42" -> ["forty", "two"])."""
    text = unicodedata.normalize("NFKD", raw.replace("’", "'").replace("‘", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    tokens: list[str] = []
    for part in re.findall(r"\d[\d,.]*(?:st|nd|rd|th)?|[^\W\d_]+(?:'[^\W\d_]+)*", text.lower()):
        tokens += _spell_digits(part.rstrip(".,")) if part[0].isdigit() else _ABBREVIATIONS.get(part, [part])
    return tokens


_LTS = sorted({
    "tch": "CH", "sch": "S K", "igh": "AY", "ough": "AO", "tion": "SH AH N", "sion": "ZH AH N",
    "ch": "CH", "sh": "SH", "th": "TH", "ph": "F", "wh": "W", "ck": "K", "ng": "NG", "qu": "K W",
    "gh": "", "kn": "N", "wr": "R", "ee": "IY", "ea": "IY", "oo": "UW", "ai": "EY", "ay": "EY",
    "ey": "EY", "oa": "OW", "ow": "OW", "ou": "AW", "oi": "OY", "oy": "OY", "au": "AO", "aw": "AO",
    "ie": "IY", "ue": "UW", "er": "ER", "ir": "ER", "ur": "ER", "ar": "AA R", "or": "AO R",
    "a": "AE", "e": "EH", "i": "IH", "o": "AA", "u": "AH", "y": "IY", "b": "B", "c": "K", "d": "D",
    "f": "F", "g": "G", "h": "HH", "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "p": "P",
    "q": "K", "r": "R", "s": "S", "t": "T", "v": "V", "w": "W", "x": "K S", "z": "Z", "'": "",
}.items(), key=lambda kv: -len(kv[0]))


_VOWELS = {"AE", "EH", "IH", "AA", "AH", "IY"}


def letter_to_sound(word: str) -> list[str]:
    """Rough ARPAbet guess for a word missing from the dictionary (greedy longest grapheme match)."""
    word = re.sub(r"[^a-z']", "", word.lower())
    if len(word) > 2 and word.endswith("e") and word[-2] not in "aeiouy":
        word = word[:-1]  # silent final e
    phones: list[str] = []
    i = 0
    while i < len(word):
        for graph, spoken in _LTS:
            if word.startswith(graph, i):
                phones += spoken.split()
                i += len(graph)
                break
        else:
            i += 1
    # "ll", "ss": one consonant, but keep repeated vowels ("ia" -> IH AE).
    phones = [p for k, p in enumerate(phones) if k == 0 or p != phones[k - 1] or p in _VOWELS]
    return phones or ["AH"]
