"""Subtitle cues to broadcast rules: line length, lines per cue, minimum duration and reading speed.

Defaults follow common broadcast/streaming style guides (Netflix, BBC): at most 42 characters per line, 2 lines
per cue, at least 0.83 s (20 frames at 24 fps) on screen, and a reading speed of at most 17 characters per second.
A line too long for one cue is split at sentence, then clause, then word boundaries, its time shared by character
count; a cue that reads too fast is extended into the silence around it (never over the next cue), which is how
subtitlers reach the reading speed without cutting text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dubforge.core.contracts import Segment


@dataclass(frozen=True)
class SubtitleRules:
    max_chars: int = 42  # per line
    max_lines: int = 2  # per cue
    min_duration: float = 0.83  # seconds on screen
    max_cps: float = 17.0  # characters per second, line breaks not counted
    min_gap: float = 0.083  # between cues (2 frames at 24 fps) so they read as separate
    max_lead_in: float = 0.5  # a cue may appear this long before its speech starts
    max_linger: float = 2.0  # and stay this long after its speech ends


_SENTENCE_END = re.compile(r"[.!?…]['\"»”)]*$")
_CLAUSE_END = re.compile(r"[,;:—–]['\"»”)]*$")


def reading_chars(text: str) -> int:
    return len(" ".join(text.split()))


def wrap(text: str, max_chars: int) -> list[str]:
    """Break text into lines of at most `max_chars` (a longer single word stays whole), balanced: two lines are
    split where the longer one is shortest, preferring a break after punctuation."""
    words = text.split()
    if not words:
        return []
    joined = " ".join(words)
    if len(joined) <= max_chars:
        return [joined]
    best: tuple[float, int] | None = None
    for cut in range(1, len(words)):
        top, bottom = " ".join(words[:cut]), " ".join(words[cut:])
        if len(top) > max_chars or len(bottom) > max_chars:
            continue
        score = max(len(top), len(bottom)) - (6 if _CLAUSE_END.search(top) or _SENTENCE_END.search(top) else 0)
        if best is None or score < best[0]:
            best = (score, cut)
    if best is not None:
        return [" ".join(words[:best[1]]), " ".join(words[best[1]:])]
    lines, current = [], ""
    for word in words:  # more than two lines' worth: greedy
        if current and len(current) + 1 + len(word) > max_chars:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current]


def _fits(words: Sequence[str], rules: SubtitleRules) -> bool:
    return len(wrap(" ".join(words), rules.max_chars)) <= rules.max_lines


def split_text(text: str, rules: SubtitleRules = SubtitleRules()) -> list[str]:
    """Pieces of `text`, each fitting one cue, split at the strongest boundary that keeps pieces balanced."""
    words = text.split()
    if _fits(words, rules):
        return [" ".join(words)] if words else []
    pieces = math.ceil(reading_chars(text) / (rules.max_chars * rules.max_lines))
    target = reading_chars(text) / max(pieces, 2)
    best: tuple[float, int] | None = None
    for cut in range(1, len(words)):
        head = words[:cut]
        if not _fits(head, rules):
            break
        strength = 0 if _SENTENCE_END.search(head[-1]) else 1 if _CLAUSE_END.search(head[-1]) else 2
        # prefer strong boundaries, then pieces near the target size
        score = strength * 25 + abs(reading_chars(" ".join(head)) - target)
        if best is None or score < best[0]:
            best = (score, cut)
    cut = best[1] if best else 1
    return [" ".join(words[:cut]), *split_text(" ".join(words[cut:]), rules)]


def broadcast_cues(segments: Sequence[Segment], video_duration: float,
                   rules: SubtitleRules = SubtitleRules()) -> list[Segment]:
    """Cues following `segments` (dubbed speech spans): each line is first extended into the gaps around it
    until it reads at `max_cps` or slower (as far as the gaps allow), then split into cues that fit the line
    rules, its time shared by character count."""
    ordered = sorted(segments, key=lambda s: s.start)
    pieces = [split_text(seg.text, rules) for seg in ordered]
    spans = _extend(ordered, [len(p) for p in pieces], video_duration, rules)
    cues: list[Segment] = []
    for seg, parts, (start, end) in zip(ordered, pieces, spans):
        total, done, first = sum(reading_chars(p) for p in parts) or 1, 0, start
        for part in parts:
            done += reading_chars(part)
            stop = first + (end - first) * done / total
            cues.append(Segment(start=round(start, 3), end=round(stop, 3), speaker=seg.speaker,
                                text="\n".join(wrap(part, rules.max_chars))))
            start = stop
    return cues


def _extend(segments: Sequence[Segment], pieces: Sequence[int], video_duration: float,
            rules: SubtitleRules) -> list[tuple[float, float]]:
    """Each segment's span, lengthened (later end first, then earlier start) to what its text needs to be read."""
    spans = [(s.start, s.end) for s in segments]
    for i, seg in enumerate(segments):
        start, end = spans[i]
        needed = max(rules.min_duration * max(pieces[i], 1), reading_chars(seg.text) / rules.max_cps)
        if end - start >= needed:
            continue
        limit = spans[i + 1][0] - rules.min_gap if i + 1 < len(segments) else video_duration
        end = max(end, min(start + needed, seg.end + rules.max_linger, limit, video_duration))
        floor = spans[i - 1][1] + rules.min_gap if i else 0.0
        start = min(start, max(end - needed, seg.start - rules.max_lead_in, floor, 0.0))
        spans[i] = (start, end)
    return spans


def bilingual_cues(translated: Sequence[Segment], sources: Sequence[str], video_duration: float,
                   rules: SubtitleRules = SubtitleRules()) -> list[Segment]:
    """One cue per dubbed line: the translation above the source text, each wrapped to `max_chars`, timed for
    reading the translation (a review/learning aid, so its lines per cue are not capped)."""
    ordered = sorted(zip(translated, sources), key=lambda pair: pair[0].start)
    spans = _extend([seg for seg, _ in ordered], [1] * len(ordered), video_duration, rules)
    return [
        seg.model_copy(update={"start": round(start, 3), "end": round(end, 3),
                               "text": "\n".join(wrap(seg.text, rules.max_chars) + wrap(source, rules.max_chars))})
        for (seg, source), (start, end) in zip(ordered, spans)
    ]


def reading_speed(cue: Segment) -> float:
    return reading_chars(cue.text.replace("\n", " ")) / max(cue.duration, 1e-6)
