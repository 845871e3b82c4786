"""Word + phoneme alignment for any language: Whisper word times, espeak-ng phonemes inside each word.

Each word's span comes from Whisper's word timestamps: the ASR transcript's own words, or for a script's
segments, the words Whisper base hears in the segment's audio, matched to the script's words by text (words
it missed share the time between their matched neighbours by their espeak durations). Inside a word, espeak-ng's phonemes for that word are laid out in proportion
to espeak's own phoneme durations. Coarser than pocketsphinx's acoustic alignment (English keeps that by
default; docs/benchmarks.md compares them) but it gives lip-sync the source's phonemes in every language
espeak-ng speaks.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np

from dubforge.core.contracts import Phoneme, Segment, Word
from dubforge.core.errors import StageError
from dubforge.core.files import fingerprint
from dubforge.core.languages import base_language
from dubforge.media.audio import (
    BLOCK_S,
    SPEECH_RATE,
    WavReader,
    regrouped,
    resample,
    resample_blocks,
    to_channels,
    write_wav,
)
from dubforge.models.base import Aligner
from dubforge.models.espeak_tts import EspeakSynthesizer, _info
from dubforge.models.whisper_asr import FasterWhisperTranscriber

_ALGORITHM = 1
PADDING = 0.15  # seconds of audio around a script segment when Whisper listens for its words


class EspeakWordAligner(Aligner):
    name = "espeak-words"

    def __init__(self, asr_model: str = "base"):
        self.asr_model = asr_model

    def fingerprint(self) -> str:

        return fingerprint(self.name, _ALGORITHM, _info()[1], FasterWhisperTranscriber(model=self.asr_model).fingerprint())

    def align(self, speech_wav: Path, segments: Sequence[Segment], language: str) -> tuple[Segment, ...]:

        try:
            voice = EspeakSynthesizer(language)
        except ValueError as exc:
            raise StageError(f"espeak-words alignment: {exc}") from None
        reader = WavReader(Path(speech_wav))  # read in blocks and per segment: memory is a block, not the source
        mono = resample_blocks((to_channels(b, 1) for b in reader.blocks()), reader.rate, SPEECH_RATE)
        envelope = np.concatenate([_envelope(b[:, 0]) for b in regrouped(mono, int(BLOCK_S * SPEECH_RATE))] or [np.zeros(0)])
        out = []
        with tempfile.TemporaryDirectory(prefix="dubforge-align-") as tmp:
            for seg in segments:
                tokens = [t for t in (_strip(raw) for raw in seg.text.split()) if t]
                if not tokens:
                    out.append(seg.model_copy(update={"words": ()}))
                    continue
                shapes = [_shape(voice, token, Path(tmp)) for token in tokens]
                weights = [sum(d for _, d in shape) or 0.1 for shape in shapes]
                if seg.words and len(seg.words) == len(tokens):  # the ASR's own words and times
                    spans = [(w.start, w.end) for w in seg.words]
                else:
                    heard = self._heard_words(reader, seg, language, Path(tmp))
                    spans = _match(tokens, heard, weights, seg, language)
                spans = _snap_to_sound(spans, envelope)
                words = []
                for token, (start, end), shape in zip(tokens, spans, shapes):
                    words.append(Word(text=token, start=round(start, 3), end=round(end, 3),
                                      phonemes=_lay_out(shape, start, end)))
                out.append(seg.model_copy(update={"words": tuple(words)}))
        return tuple(out)

    def _heard_words(self, reader: WavReader, seg: Segment, language: str, tmp: Path) -> list[Word]:
        """Whisper's words (absolute times) in a script segment's audio."""

        begin = max(0.0, seg.start - PADDING)
        first, last = int(begin * reader.rate), int((seg.end + PADDING) * reader.rate)
        clip = resample(to_channels(reader.read(first, max(0, last - first)), 1), reader.rate, SPEECH_RATE)
        if len(clip) < SPEECH_RATE // 10:
            return []
        wav = write_wav(tmp / "segment.wav", clip, SPEECH_RATE)
        heard = FasterWhisperTranscriber(model=self.asr_model, vad_filter=False).transcribe(wav, base_language(language))
        return [w.model_copy(update={"start": begin + w.start, "end": begin + w.end})
                for s in heard.segments for w in s.words]


def _match(tokens: list[str], heard: list[Word], weights: list[float], seg: Segment,
           language: str) -> list[tuple[float, float]]:
    """Script words take the times of the heard words they match (normalised text, in order); the others share
    the time between their matched neighbours (or the heard speech's edges) by espeak duration."""
    from dubforge.core.textscore import normalise

    said = [normalise(t, language) for t in tokens]
    matcher = SequenceMatcher(a=said, b=[normalise(w.text, language) for w in heard], autojunk=False)
    spans: list[tuple[float, float] | None] = [None] * len(tokens)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            spans[a + k] = (heard[b + k].start, heard[b + k].end)
    lo = heard[0].start if heard else seg.start
    hi = heard[-1].end if heard else seg.end
    i = 0
    while i < len(spans):
        if spans[i] is not None:
            i += 1
            continue
        j = i
        while j < len(spans) and spans[j] is None:
            j += 1
        before, after = (spans[i - 1] if i > 0 else None), (spans[j] if j < len(spans) else None)
        start = before[1] if before is not None else min(lo, after[0] if after is not None else lo)
        end = after[0] if after is not None else max(hi, start)
        if end <= start:  # no room between anchors: take a share of the neighbours' time
            end = start + 0.05 * (j - i)
        spans[i:j] = _share(start, end, weights[i:j])
        i = j
    return [span for span in spans if span is not None]


FRAME = 0.01  # seconds per envelope frame


def _envelope(mono):
    """RMS per 10 ms frame."""

    hop = int(FRAME * SPEECH_RATE)
    frames = len(mono) // hop
    return np.sqrt(np.mean(mono[: frames * hop].reshape(frames, hop) ** 2, axis=1)) if frames else np.zeros(0)


def _snap_to_sound(spans: list[tuple[float, float]], envelope) -> list[tuple[float, float]]:
    """Whisper's word times are loose at the edges of speech (often the segment start, silence included):
    move the first word's start and the last word's end onto the sound inside them (10% of the loud level)."""

    if not spans or not len(envelope):
        return spans
    a, b = int(spans[0][0] / FRAME), int(np.ceil(spans[-1][1] / FRAME))
    inside = envelope[a:b]
    if not len(inside):
        return spans
    loud = np.flatnonzero(inside > 0.1 * np.percentile(inside, 95))
    if not len(loud):
        return spans
    first_end, last_start = spans[0][1], spans[-1][0]
    onset = min((a + loud[0]) * FRAME, first_end - FRAME)
    offset = max((a + loud[-1] + 1) * FRAME, last_start + FRAME)
    spans = list(spans)
    spans[0] = (max(spans[0][0], onset), spans[0][1])
    spans[-1] = (spans[-1][0], min(spans[-1][1], offset))
    return spans


def _strip(raw: str) -> str:
    return re.sub(r"^[^\w']+|[^\w']+$", "", raw)


def _shape(voice, token: str, tmp: Path) -> list[tuple[str, float]]:
    """espeak-ng's phonemes of one word and their durations (pauses before and after dropped)."""
    speech = voice.synthesize(token, tmp / "word.wav")
    return [(p.symbol, p.end - p.start) for p in speech.phonemes if p.symbol != "_"]


def _share(start: float, end: float, weights: list[float]) -> list[tuple[float, float]]:
    total, t, spans = sum(weights), start, []
    for weight in weights:
        step = (end - start) * weight / total
        spans.append((t, t + step))
        t += step
    return spans


def _lay_out(shape: list[tuple[str, float]], start: float, end: float) -> tuple[Phoneme, ...]:
    if not shape or end <= start:
        return ()
    return tuple(Phoneme(symbol=symbol, start=round(a, 3), end=round(b, 3))
                 for (symbol, _), (a, b) in zip(shape, _share(start, end, [d or 0.01 for _, d in shape])))
