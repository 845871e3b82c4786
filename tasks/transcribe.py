"""ASR and forced-alignment stage functions (plain; the flow wraps them as Prefect tasks and caches them)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dubforge.core.contracts import Phoneme, Segment, SourceMedia, Transcript
from dubforge.core.errors import StageError
from dubforge.core.languages import base_language
from dubforge.core.scripts import read_script
from dubforge.media.audio import BLOCK_S, WavReader, to_channels, wav_writer
from dubforge.models.base import Transcriber, create_aligner, create_transcriber

log = logging.getLogger(__name__)


# A longer source is transcribed this much at a time: Whisper's feature extraction holds about 50 MB per minute
# it is given, so memory is that of a window, not of the programme. Whisper decodes 30 s at a time anyway.
ASR_WINDOW_S = 60.0
ASR_SEARCH_S = 15.0  # each cut between windows goes at the quietest moment this close to its nominal place
_QUIET_S = 0.2


def transcribe(speech_wav: Path, language: str, backend: str = "faster-whisper",
               options: dict[str, Any] | None = None, models_file: Path | None = None) -> Transcript:
    """16 kHz mono speech -> Transcript (segments with word times) from ASR backend `backend`.

    Speech longer than 1.2 ASR_WINDOW_S is cut into windows of about ASR_WINDOW_S at its quietest moments (ASR
    extracts the features of all it is given at once) and transcribed window by window; the language
    detected in the first window ('auto') is used for the others."""
    return transcribe_windows(create_transcriber(backend, models_file, **(options or {})), Path(speech_wav), language)


def transcribe_windows(transcriber: Transcriber, speech_wav: Path, language: str) -> Transcript:
    """`transcriber` on `speech_wav`, window by window when it is longer than 1.2 ASR_WINDOW_S (see `transcribe`)."""
    try:
        reader = WavReader(speech_wav)
    except (OSError, ValueError):
        reader = None  # not a WAV this reader knows: the backend reads it whole
    cuts = _cuts(reader) if reader is not None else []
    if len(cuts) <= 2:
        return transcriber.transcribe(speech_wav, language)
    assert reader is not None
    first: Transcript | None = None
    segments: list[Segment] = []
    with tempfile.TemporaryDirectory(prefix="asr-", dir=speech_wav.parent) as tmp:
        for start, end in zip(cuts, cuts[1:]):
            window = Path(tmp) / "window.wav"
            with wav_writer(window, reader.rate, reader.channels) as writer:
                for at in range(start, end, int(BLOCK_S * reader.rate)):
                    writer.write(reader.read(at, min(end - at, int(BLOCK_S * reader.rate))))
            part = transcriber.transcribe(window, first.language if first is not None and language == "auto" else language)
            first = first or part
            segments += [_shifted(seg, start / reader.rate) for seg in part.segments]
    assert first is not None
    return first.model_copy(update={"segments": tuple(segments)})


def _cuts(reader: WavReader) -> list[int]:
    """Sample positions of the window edges: [0, ..., frames]; [0, frames] when one window holds it all."""
    rate, frames = reader.rate, reader.frames
    window = int(ASR_WINDOW_S * rate)
    if frames <= 1.2 * window:
        return [0, frames]
    hop, search = int(_QUIET_S * rate / 2), int(ASR_SEARCH_S * rate)
    cuts = [0]
    while frames - cuts[-1] > 1.2 * window:
        lo = cuts[-1] + window - search
        audio = to_channels(reader.read(lo, 2 * search), 1)[:, 0]
        count = len(audio) // hop
        energy = np.square(audio[: count * hop].astype(np.float64)).reshape(count, hop).sum(axis=1)
        quiet = energy[:-1] + energy[1:]  # 0.2 s windows, 0.1 s apart
        cuts.append(lo + (int(np.argmin(quiet)) + 1) * hop)  # the middle of the quietest window
    return [*cuts, frames]


def _shifted(seg: Segment, offset: float) -> Segment:
    def moved(t: float) -> float:
        return round(t + offset, 3)

    words = tuple(w.model_copy(update={"start": moved(w.start), "end": moved(w.end),
                                       "phonemes": tuple(Phoneme(p.symbol, moved(p.start), moved(p.end))
                                                         for p in w.phonemes)})
                  for w in seg.words)
    return seg.model_copy(update={"start": moved(seg.start), "end": moved(seg.end), "words": words})


def source_transcript(media: SourceMedia, script: Path | None, language: str, backend: str,
                      options: dict[str, Any] | None = None, models_file: Path | None = None) -> Transcript:
    """The source's lines: the user's script when given (its cue times are the windows), else ASR."""
    if script is not None:
        segments = read_script(script, video_duration=media.duration, column="transcription")
        return Transcript(language=language, segments=tuple(segments), backend=f"script ({script.name})")
    if media.speech_wav is None:
        raise StageError("the source has no audio to transcribe: give its transcript as source.script")
    return transcribe(media.speech_wav, language, backend, options, models_file)


def alignment_backend(backend: str, language: str) -> str:
    """'auto': pocketsphinx for English (acoustic alignment), espeak-words (Whisper words + espeak phonemes)
    for every other language."""
    if backend != "auto":
        return backend
    return "pocketsphinx" if base_language(language) == "en" else "espeak-words"


def align(speech_wav: Path, transcript: Transcript, backend: str = "auto",
          options: dict[str, Any] | None = None) -> Transcript:
    """Fill every segment's words with aligned times and phonemes; segment times and text stay as they are."""
    backend = alignment_backend(backend, transcript.language)
    aligner = create_aligner(backend, **(options or {}))
    segments = aligner.align(Path(speech_wav), transcript.segments, transcript.language)
    return transcript.model_copy(update={"segments": tuple(segments), "backend": f"{transcript.backend}+{backend}"})


def tighten_to_words(transcript: Transcript) -> Transcript:
    """Set each segment's window to its aligned speech (first word start to last word end).

    ASR segment bounds include breaths and silence; the dub must fit the speech itself.
    """
    segments = tuple(
        seg.model_copy(update={"start": seg.words[0].start, "end": seg.words[-1].end})
        if seg.words and seg.words[-1].end > seg.words[0].start
        else seg
        for seg in transcript.segments
    )
    return transcript.model_copy(update={"segments": segments})


def align_source(media: SourceMedia, transcript: Transcript, backend: str, from_script: bool) -> Transcript:
    """Word and phoneme times of the source lines. Without an aligner for the language the lines are dubbed
    from their segment times alone (said in the transcript's backend). A script's cue times are the user's
    windows; ASR segment bounds are loose, so those are tightened to the aligned words."""
    if media.speech_wav is None:  # a script over a silent video: nothing to align against
        return transcript
    try:
        aligned = align(media.speech_wav, transcript, backend)
    except StageError as exc:
        log.warning("alignment skipped: %s", exc)
        return transcript.model_copy(update={"backend": f"{transcript.backend} (unaligned: {exc})"})
    return aligned if from_script else tighten_to_words(aligned)
