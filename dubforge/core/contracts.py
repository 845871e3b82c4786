"""Typed data passed between stages. Defined once; every stage speaks these types.

Times are seconds from the start of the source video (floats). Audio files are WAV.
All records are pydantic models so they serialise to JSON for caching, QC and review.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SPEAKER = "speaker 1"  # when neither a script's speaker column nor diarization names the speaker


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class Phoneme:
    """One phone with its time span. `symbol` is ARPAbet (pocketsphinx) or IPA (TTS engines).

    A slotted dataclass, not a pydantic model: an hour's records hold about 45 000 of them, at about 110 bytes
    each instead of about 600. Pydantic validates and serialises it inside the records exactly as before (same
    JSON object, extra keys refused)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    symbol: str
    start: float
    end: float

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        """The fields, as the pydantic record gave them: fingerprint() keys work folders on a dub's phonemes."""
        return {"symbol": self.symbol, "start": self.start, "end": self.end}

    def __setstate__(self, state: Any) -> None:
        # a cache pickled when Phoneme was a pydantic model holds its state as {"__dict__": {...}, ...}
        values = state["__dict__"] if isinstance(state, dict) else dict(zip(("symbol", "start", "end"), state))
        for name in ("symbol", "start", "end"):
            object.__setattr__(self, name, values[name])


class Word(Record):
    text: str
    start: float
    end: float
    phonemes: tuple[Phoneme, ...] = ()


class Segment(Record):
    """One line of dialogue: a subtitle cue, an ASR segment or a dubbing-CSV row."""

    start: float
    end: float
    text: str
    speaker: str = DEFAULT_SPEAKER
    words: tuple[Word, ...] = ()

    @property
    def duration(self) -> float:
        return self.end - self.start


class Transcript(Record):
    language: str = Field(description="BCP-47 code of the speech (detected when the manifest says 'auto')")
    segments: tuple[Segment, ...]
    backend: str = Field(description="which backend produced (or parsed) it")
    language_probability: float | None = Field(None, description="when detected: the language model's probability")


class SourceMedia(Record):
    """What ingest found and extracted. Paths point into the work directory."""

    video: Path
    duration: float
    width: int
    height: int
    fps: float = Field(description="average frame rate of the video stream")
    frame_count: int
    video_codec: str
    speech_wav: Path | None = Field(description="16 kHz mono copy for ASR/alignment")
    mix_wav: Path | None = Field(description="48 kHz stereo copy for separation and the mix")
    audio_language: str
    audio_stream: int = Field(0, description="the source audio stream used (index among its audio streams)")


class Stems(Record):
    """Result of separation: what goes under the dub, and how the mix treats it."""

    background: Path | None = Field(description="M&E (replace mode) or the original mix (voice_over)")
    dialogue: Path | None = Field(None, description="the separated dialogue stem, when a separator made one")
    mode: str = Field(description="replace | voice_over")
    backend: str


class Line(Record):
    """One line to dub in a target language, placed in its source window."""

    index: int
    start: float
    end: float
    source_text: str
    text: str
    speaker: str = DEFAULT_SPEAKER
    warnings: tuple[str, ...] = Field((), description="for the reviewer, e.g. a glossary term missing")


class Translation(Record):
    language: str
    lines: tuple[Line, ...]
    backend: str


class Speech(Record):
    """One synthesised line: audio plus phoneme timings relative to the clip start."""

    wav: Path
    sample_rate: int
    duration: float
    phonemes: tuple[Phoneme, ...]


class FittedLine(Record):
    """A dubbed line as placed on the timeline after isochrony fitting."""

    index: int
    window_start: float
    window_end: float
    start: float
    end: float
    natural_duration: float = Field(description="TTS duration at the voice's normal rate")
    rate: float = Field(description="synthesis rate used (1 = normal)")
    stretch: float = Field(description="time-stretch speed-up applied after synthesis (1 = none)")
    speed: float = Field(description="total speed-up = natural_duration / placed duration")
    borrowed: float = Field(description="seconds taken from the following silence")
    overflow: float = Field(description="seconds the line still runs past its available time")
    text: str


class DubTrack(Record):
    """A language's dialogue track: every fitted line on the source timeline."""

    language: str
    wav: Path
    sample_rate: int
    lines: tuple[FittedLine, ...]
    phonemes: tuple[Phoneme, ...] = Field(description="dub phonemes on the source timeline (for lip-sync)")
    backend: str


class Mix(Record):
    language: str
    wav: Path
    mode: str
    preset: str
    integrated_lufs: float
    true_peak_dbtp: float


class MediaInfo(Record):
    """Stream headers of a source (probed, nothing decoded)."""

    path: Path
    duration: float  # of the video stream, seconds
    has_video: bool
    width: int
    height: int
    fps: float
    fps_fraction: str  # exact average rate, "num/den"
    frame_count: int
    video_codec: str
    start_time: float  # of the video stream, seconds on the container clock
    file_start_time: float = 0.0  # the file's first timestamp (any stream), seconds on the container clock
    has_audio: bool
    audio_channels: int
    audio_rate: int
    audio_codec: str
    audio_language: str  # ISO 639 tag of the chosen audio stream as stored, "und" if none
    audio_start_time: float  # of the chosen audio stream, seconds on the container clock
    audio_index: int = 0  # the chosen audio stream, among the audio streams (source.audio_stream / language tag)
    audio_languages: tuple[str, ...] = ()  # tag of every audio stream, in order


class LineCheck(Record):
    """One dubbed line heard back: what an independent ASR understood where the line plays."""

    index: int
    start: float
    end: float
    text: str = Field(description="the line as it should be spoken (the translation)")
    heard: str = Field(description="what Whisper heard in [start, end] of the delivered audio")
    wer: float
    cer: float
    flagged: bool = Field(description="cer above qc.max_cer")


class BackTranscription(Record):
    """Back-transcription QC of one delivered language (Whisper in that language, scored line by line)."""

    language: str
    backend: str
    max_cer: float
    lines: tuple[LineCheck, ...]

    @property
    def median_cer(self) -> float | None:
        values = sorted(line.cer for line in self.lines)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    @property
    def flagged(self) -> tuple[int, ...]:
        return tuple(line.index for line in self.lines if line.flagged)
