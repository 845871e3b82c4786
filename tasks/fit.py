"""Timing fit (isochrony): place every dubbed line in its source window on a 48 kHz dialogue track.

Policy per line (window = [start, end] of the source line):
1. Speak at the natural rate. If it fits the window, place it at the window start, speed 1.
2. Else, if a total speed-up <= timing.max_speedup makes it fit the window, use exactly that speed-up.
3. Else speed up to max_speedup and borrow only the rest from the following silence (up to the next line's
   start minus timing.gap, or the video end): staying in the source window keeps the dub on the speaker.
4. Whatever still does not fit is `overflow`: the text is never cut; the next line is pushed later, and
   audio past the video end is faded out and cut.
A speed-up s is done by the TTS rate first (up to timing.max_rate), then by a pitch-preserving
time-stretch for the rest, so that natural_duration / placed duration == s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dubforge.core.contracts import DubTrack, FittedLine, Line, Phoneme, Speech
from dubforge.core.errors import StageError
from dubforge.core.files import fingerprint, write_json_atomic
from dubforge.core.registry import UnknownBackend, load_class
from dubforge.media.audio import BLOCK_S, MIX_RATE, WavWriter, read_wav, resample, wav_writer
from dubforge.media.stretch import time_stretch

if TYPE_CHECKING:
    from dubforge.core.manifest import Timing, Voice
    from dubforge.models.base import Synthesizer

FADE_S = 0.005  # fade at each line's edges (no clicks)
TAIL_FADE_S = 0.1  # fade before a cut at the video end
TRIM_DB = -40.0  # leading/trailing TTS silence below this (relative to the clip peak) is dropped
TRIM_PAD_S = 0.01
EPS = 1e-6


@dataclass(frozen=True)
class Clip:
    """A synthesised line at MIX_RATE, mono, trimmed to its speech; phoneme times relative to clip start."""

    samples: np.ndarray  # (n,) float32
    phonemes: tuple[Phoneme, ...]

    @property
    def duration(self) -> float:
        return len(self.samples) / MIX_RATE


_SILENT = Clip(np.zeros(0, np.float32), ())


def speaker_voices(language: str, voices: Mapping[str, Voice], speakers: set[str], references: Mapping[str, Path],
                   make: Callable[[str, Voice, Path | None], Synthesizer]) -> dict[str, Synthesizer]:
    """speaker -> synthesizer, made by `make(speaker, voice, reference clip or None)`.

    A cloning voice clones each speaker from their own clip (`references`), never from another speaker's: a
    cloning default voice '*' becomes one synthesizer per speaker without a voice of their own."""
    chosen: dict[str, Synthesizer] = {}
    for speaker, voice in voices.items():
        if not voice.clone:
            chosen[speaker] = make(speaker, voice, None)
            if speaker == "*" and voice.name is None:  # several speakers on a default voice: one voice each
                names = _voice_names(voice.backend, language)
                for i, who in enumerate(sorted(speakers - voices.keys())[1:len(names)], 1):
                    chosen[who] = make(who, voice.model_copy(update={"name": names[i]}), None)
            continue
        for who in ([speaker] if speaker != "*" else sorted(speakers - voices.keys())):
            if who not in references:
                raise StageError(f"{language}: cannot clone the voice of {who!r}: the dialogue has under 6 s of their "
                                 f"clean solo speech; give them a voice without clone (voices: {{{who}: ...}})")
            chosen[who] = make(who, voice, references[who])
    return chosen


def _voice_names(backend: str, language: str) -> tuple[str, ...]:
    """The distinct voices a backend offers for `language`, best first (`voice_names`), else none."""
    try:
        listing = getattr(load_class("tts", backend), "voice_names", None)
    except (UnknownBackend, ImportError):
        return ()
    return tuple(listing(language)) if listing else ()


def _pick(synthesizers: Mapping[str, Synthesizer], speaker: str) -> Synthesizer:
    synth = synthesizers.get(speaker) or synthesizers.get("*")
    if synth is None:
        known = ", ".join(sorted(synthesizers)) or "none"
        raise StageError(f"no voice for speaker {speaker!r} and no default voice '*' (voices: {known})")
    return synth


def _trim(samples: np.ndarray, phonemes: tuple[Phoneme, ...]) -> Clip:
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak <= 0.0:
        return Clip(np.zeros(0, np.float32), ())
    loud = np.flatnonzero(np.abs(samples) >= peak * 10 ** (TRIM_DB / 20))
    pad = int(TRIM_PAD_S * MIX_RATE)
    first, last = max(0, loud[0] - pad), min(len(samples), loud[-1] + 1 + pad)
    offset, length = first / MIX_RATE, (last - first) / MIX_RATE
    kept = []
    for p in phonemes:
        start, end = max(0.0, p.start - offset), min(length, p.end - offset)
        if end > start:
            kept.append(Phoneme(symbol=p.symbol, start=start, end=end))
    return Clip(np.ascontiguousarray(samples[first:last], dtype=np.float32), tuple(kept))


def synthesize_cached(synth: Synthesizer, text: str, rate: float, cache_dir: Path) -> Clip:
    """Speak `text` at `rate`, reusing the WAV + Speech record cached under a content fingerprint."""
    key = fingerprint(text, synth.fingerprint(), round(float(rate), 4))
    wav, meta = cache_dir / f"{key}.wav", cache_dir / f"{key}.json"
    if wav.is_file() and meta.is_file():
        speech = Speech.model_validate_json(meta.read_text(encoding="utf-8"))
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        speech = synth.synthesize(text, wav, rate=rate)
        if not wav.is_file():
            raise StageError(f"TTS backend {synth.name!r} wrote no audio to {wav} for {text!r}")
        write_json_atomic(meta, speech.model_dump(mode="json"))
    data, sr = read_wav(wav)
    mono = resample(data.mean(axis=1, keepdims=True), sr, MIX_RATE)[:, 0]
    return _trim(mono, speech.phonemes)


def _choose_speed(natural: float, window: float, cap: float) -> float:
    """The total speed-up following the module's policy (steps 1-4)."""
    if natural <= window + EPS:
        return 1.0
    if window > EPS and natural / window <= cap + EPS:
        return natural / window
    return cap


def _clean(seconds: float) -> float:
    return round(seconds, 6) if seconds >= 1 / MIX_RATE else 0.0


def _in_order(phonemes: list[Phoneme]) -> bool:
    """Sorted by (start, end) already, as placed lines' phonemes are (sorting an hour's 45 000 builds as many keys)."""
    return all((a.start, a.end) <= (b.start, b.end) for a, b in pairwise(phonemes))


def _edge_fades(samples: np.ndarray, fade_in: float, fade_out: float) -> np.ndarray:
    out = samples.copy()
    n_in = min(len(out) // 2, int(round(fade_in * MIX_RATE)))
    n_out = min(len(out) // 2, int(round(fade_out * MIX_RATE)))
    if n_in:
        out[:n_in] *= np.linspace(0.0, 1.0, n_in, endpoint=False, dtype=np.float32)
    if n_out:
        out[-n_out:] *= np.linspace(1.0, 0.0, n_out, dtype=np.float32)
    return out


class _Track:
    """The dub track, written as the lines are placed. Lines come in order of start, so the samples before a line's
    start are final: only those a later line can still add to are held (memory: a line, not the programme)."""

    def __init__(self, writer: WavWriter, total: int):
        self.writer, self.total, self.done = writer, total, 0
        self.held = np.zeros(0, np.float32)  # samples [done, done + len(held))

    def add(self, first: int, audio: np.ndarray) -> None:
        self._flush(first)
        audio = audio[max(0, self.done - first) :]
        offset = max(0, first - self.done)
        if not len(audio):
            return
        if offset + len(audio) > len(self.held):
            self.held = np.concatenate([self.held, np.zeros(offset + len(audio) - len(self.held), np.float32)])
        self.held[offset : offset + len(audio)] += audio

    def _flush(self, upto: int) -> None:
        count = min(upto, self.total) - self.done
        if count <= 0:
            return
        kept = min(count, len(self.held))
        self.writer.write(self.held[:kept, None])
        self.held = self.held[kept:]
        for start in range(kept, count, int(BLOCK_S * MIX_RATE)):
            self.writer.write(np.zeros((min(count - start, int(BLOCK_S * MIX_RATE)), 1), np.float32))
        self.done += count

    def close(self) -> None:
        self._flush(self.total)


def fit_track(
    lines: Sequence[Line],
    synthesizers: Mapping[str, Synthesizer],
    timing: Timing,
    video_duration: float,
    work_dir: Path,
    language: str,
    progress: Callable[[int, int], None] | None = None,
    tts_cache: Path | None = None,
    line_voice: Callable[[Line, Synthesizer], Synthesizer] | None = None,
) -> DubTrack:
    """Synthesise, fit and place every line; write `work_dir/dub.<language>.wav` (48 kHz mono float,
    exactly round(video_duration * 48000) samples) and return the DubTrack.

    Synthesised lines are cached in `tts_cache` (default `work_dir/tts`) by text, voice and rate;
    `progress(done, total)` is called after each line; `line_voice(line, synthesizer)` may give a line its own
    synthesizer (e.g. one speaking with the source line's intonation)."""
    if not video_duration > 0:
        raise StageError(f"video duration must be positive to build the {language} dub track (got {video_duration})")
    work_dir = Path(work_dir)
    cache_dir = Path(tts_cache) if tts_cache else work_dir / "tts"
    total = int(round(video_duration * MIX_RATE))
    ordered = sorted(lines, key=lambda ln: (ln.start, ln.index))
    fitted: list[FittedLine] = []
    phonemes: list[Phoneme] = []
    used: set[str] = set()
    not_before = -math.inf  # an overflowing line pushes the next one to its end + gap

    wav = work_dir / f"dub.{language}.wav"
    with wav_writer(wav, MIX_RATE, 1) as writer:
        track = _Track(writer, total)
        for i, line in enumerate(ordered):
            synth = _pick(synthesizers, line.speaker)
            used.add(synth.name)
            if line_voice is not None:
                synth = line_voice(line, synth)
            spoken = bool(line.text.strip())
            start = max(line.start, not_before) if spoken else line.start
            nxt = ordered[i + 1].start - timing.gap if i + 1 < len(ordered) else video_duration
            window = max(0.0, min(line.end, video_duration) - start)
            span = max(window, min(nxt, video_duration) - start)

            clip = synthesize_cached(synth, line.text, 1.0, cache_dir) if spoken else _SILENT
            natural = clip.duration
            speed = _choose_speed(natural, window, timing.max_speedup) if natural > 0 else 1.0
            rate, stretch = 1.0, 1.0
            if speed > 1.0 + EPS:
                rate = min(speed, timing.max_rate)
                if rate > 1.0 + EPS:
                    clip = synthesize_cached(synth, line.text, rate, cache_dir)
                else:
                    rate = 1.0
                target = max(1, int(round(natural * MIX_RATE / speed)))
                # stretch the rest; also when the TTS rate overshot (e.g. espeak's whole words-per-minute
                # steps), so that the total speed-up is exactly the one chosen
                if abs(len(clip.samples) / target - 1) > 1e-3:
                    stretch = len(clip.samples) / target
                    stretched = time_stretch(clip.samples[:, None], MIX_RATE, stretch)[:, 0]
                    scaled = (Phoneme(symbol=p.symbol, start=p.start / stretch, end=p.end / stretch) for p in clip.phonemes)
                    clip = Clip(stretched, tuple(scaled))
            placed = clip.duration
            end = start + placed
            # under one sample is rounding, not borrowing/overflow
            borrowed = _clean(min(placed, span) - window)
            overflow = _clean(placed - span)
            if overflow > 0:
                not_before = max(not_before, end + timing.gap)

            # place on the track; audio past the video end is faded out and cut
            first = int(round(start * MIX_RATE))
            audio = _edge_fades(clip.samples, FADE_S, FADE_S)
            room = total - first
            if room < len(audio):
                audio = _edge_fades(audio[: max(0, room)], 0.0, TAIL_FADE_S)
            track.add(first, audio)
            cut = min(end, video_duration)
            for p in clip.phonemes:
                p_start, p_end = start + p.start, min(start + p.end, cut)
                if p_end > p_start:
                    phonemes.append(Phoneme(symbol=p.symbol, start=p_start, end=p_end))

            fitted.append(
                FittedLine(
                    index=line.index,
                    window_start=line.start,
                    window_end=line.end,
                    start=start,
                    end=end,
                    natural_duration=natural,
                    rate=rate,
                    stretch=stretch,
                    speed=natural / placed if placed > 0 else 1.0,
                    borrowed=borrowed,
                    overflow=overflow,
                    text=line.text,
                )
            )
            if progress:
                progress(i + 1, len(ordered))
        track.close()

    return DubTrack(
        language=language,
        wav=wav,
        sample_rate=MIX_RATE,
        lines=tuple(fitted),
        phonemes=tuple(phonemes if _in_order(phonemes) else sorted(phonemes, key=lambda p: (p.start, p.end))),
        backend=",".join(sorted(used)),
    )
