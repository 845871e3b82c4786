"""What delivery reports: the QC of a language (`OUT/<lang>/qc.json`, schema in `manifests/qc.schema.json`) and
the deliverable record a language hands the master and the run report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from dubforge.core.contracts import Record

QC_SCHEMA_VERSION = 1


def _without_none(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Optional sections are left out of the JSON when absent (null stays null for measured values)."""
    return {k: v for k, v in data.items() if not (k in keys and v is None)}


class LineQC(Record):
    """One dubbed line: where its source window was, where the dub was placed and how it was fitted."""

    index: int
    window: tuple[float, float] = Field(description="source window (s)")
    placed: tuple[float, float] = Field(description="where the dub plays (s)")
    dub_duration: float
    natural_duration: float = Field(description="TTS duration at the voice's normal rate (s)")
    speed: float = Field(description="total speed-up (natural duration / placed duration)")
    rate: float
    stretch: float
    borrowed: float = Field(description="seconds taken from the following silence")
    overflow: float = Field(description="seconds still running past the available time")
    text: str
    warnings: tuple[str, ...] = ()
    heard: str | None = Field(None, description="back-transcription: what Whisper heard where the line plays")
    wer: float | None = None
    cer: float | None = None
    flagged: bool | None = Field(None, description="cer above qc.max_cer")

    @model_serializer(mode="wrap")
    def _drop_unchecked(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), ("heard", "wer", "cer", "flagged"))


class FitSummary(Record):
    lines: int
    max_speed: float
    lines_sped_up: int
    lines_overflowing: int
    total_overflow: float
    warnings: int = 0


class LoudnessQC(Record):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    preset: str
    target_lufs: float
    max_true_peak_dbtp: float
    integrated_lufs: float | None = Field(description="null: digital silence")
    dialogue_gated: bool
    true_peak_dbtp: float | None
    measured_on: str = "delivered file"
    passed: bool = Field(alias="pass")


class FlaggedLine(Record):
    index: int
    start: float
    end: float
    text: str
    heard: str
    cer: float


class HeardBackQC(Record):
    """Back-transcription of the delivered language, summarised."""

    backend: str
    language: str
    max_cer: float
    median_cer: float | None
    flagged: tuple[FlaggedLine, ...]
    heard: str = Field("delivery", description="what Whisper heard: 'mix' (the language's mix, heard while it was "
                       "encoded; the delivered track matches it within `mix_residual_db`) or 'delivery'")
    mix_residual_db: float | None = Field(None, description="the delivered track against the mix it was encoded "
                                          "from: residual energy, dB (AAC 192 kb/s: about -30)")
    note: str = "a flag can be a voice that mispronounces, a dub buried under music, or a bad translation"


class LipsyncQC(BaseModel):
    """The lip-sync scorecard (its metrics, as `dubforge.lipsync.score` measured them) and its verdict."""

    model_config = ConfigDict(frozen=True, extra="allow")  # the scorecard's metrics

    status: str = Field(description="ok | degraded | unscored")
    coverage: float | None = None
    min_coverage: float
    backend: str
    visemes: str
    warnings: tuple[str, ...] = ()


class DeliveredDuration(Record):
    video: float
    delivered: float


class QCReport(Record):
    """`OUT/<lang>/qc.json`."""

    language: str
    deliverable: str = Field(description="file name of the language's MP4 (or MOV)")
    duration: DeliveredDuration
    segments: tuple[LineQC, ...]
    summary: FitSummary
    loudness: LoudnessQC
    backends: dict[str, str]
    back_transcription: HeardBackQC | None = None
    lipsync: LipsyncQC | None = None

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), ("back_transcription", "lipsync"))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class MasterTrack(Record):
    """What the master takes from a delivered language (its cache key hashes these files' content only)."""

    mp4: Path
    mix_wav: Path
    srt: Path


class Deliverable(Record):
    """A delivered language: its files (all in `OUT/<lang>/`) and the figures the run report shows."""

    mp4: Path = Field(description="the picture with the dub: MP4, or MOV for ProRes/DNxHD sources")
    mix_wav: Path
    qc: Path
    provenance: Path
    srt: Path
    srt_for_master: Path
    csv: Path
    vtt: Path | None = None
    dialogue_stem: Path | None = None
    bilingual_srt: Path | None = None
    captioned_mp4: Path | None = None
    loudness_lufs: float | None
    true_peak_dbtp: float | None
    lines: int
    max_speed: float
    lipsync: str | None = Field(None, description="lip-sync verdict: ok | degraded | unscored")
    lipsync_coverage: float | None = None
    median_cer: float | None = None
    flagged_lines: tuple[FlaggedLine, ...] | None = None

    def master_track(self) -> MasterTrack:
        return MasterTrack(mp4=self.mp4, mix_wav=self.mix_wav, srt=self.srt_for_master)

    def report_entry(self) -> dict[str, Any]:
        """The language's entry in report.json (absent optional fields left out)."""
        return {"status": "completed", **self.model_dump(mode="json", exclude_none=True)}


def qc_json_schema() -> dict[str, Any]:
    """JSON Schema of qc.json (`dubforge schema --qc`; committed as manifests/qc.schema.json)."""
    schema = QCReport.model_json_schema(by_alias=True)  # absent optional sections are left out of the file
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "dubforge qc.json",
            "version": QC_SCHEMA_VERSION, **schema}
