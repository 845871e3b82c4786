"""Delivery QC: measure what ships (the muxed file, decoded back), not the WAVs that went in.

`back_transcribe` is the intelligibility check: the delivered audio is transcribed by Whisper base in the
dub's own language, the words are given to the dubbed line playing when they were heard, and each line is
scored against its text (WER, CER after `dubforge.core.textscore.normalise`). A flagged line can be a voice
that mispronounces, a dub buried under music, or a bad translation: listen to it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import srt
from scipy.io import wavfile

from dubforge.core.contracts import BackTranscription, FittedLine, LineCheck, Word
from dubforge.core.errors import StageError
from dubforge.core.files import atomic_path, fingerprint
from dubforge.core.textscore import error_rates
from dubforge.media import loudness
from dubforge.media.audio import (
    MIX_RATE,
    SPEECH_RATE,
    WavReader,
    decode_audio_blocks,
    resample_blocks,
    to_channels,
    wav_writer,
    write_wav,
)
from dubforge.models.base import create_transcriber

log = logging.getLogger(__name__)
_OVERSAMPLE = 4  # true peak per ITU-R BS.1770-4 annex 2


@dataclass(frozen=True)
class TrackInfo:
    index: int  # ordinal among streams of its kind (ffmpeg's a:N / s:N)
    codec: str
    language: str  # as tagged in the container ('spa', 'ger'), "und" if untagged
    title: str
    default: bool
    channels: int = 0
    sample_rate: int = 0


@dataclass(frozen=True)
class Delivery:
    path: Path
    duration: float  # first to last presented sample of video and audio, seconds
    video_duration: float
    frame_count: int
    fps: float
    audio: tuple[TrackInfo, ...]
    subtitles: tuple[TrackInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)  # container tags, keys lower-cased
    measured_audio: int = 0  # which audio track (ordinal) the loudness figures are for
    integrated_lufs: float = float("-inf")  # -inf for digital silence
    true_peak_dbtp: float = float("-inf")
    reference_residual_db: float | None = None  # the measured track against `reference` (measure_delivery)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(track.language for track in self.audio)


def _track(i: int, stream) -> TrackInfo:
    ctx = stream.codec_context
    is_audio = stream.type == "audio"
    return TrackInfo(
        index=i,
        codec=ctx.name if ctx is not None else "",
        language=stream.metadata.get("language") or "und",
        title=stream.metadata.get("title") or "",
        default=bool(stream.disposition & 1),  # AV_DISPOSITION_DEFAULT
        channels=int(ctx.channels) if is_audio else 0,
        sample_rate=int(ctx.sample_rate) if is_audio else 0,
    )


class _Span:
    """Timeline extent and packet count of one stream, from its packets (no decoding)."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("-inf")
        self.packets = 0

    def add(self, packet) -> None:
        t = float(packet.pts * packet.time_base)
        self.start = min(self.start, t)
        self.end = max(self.end, t + float((packet.duration or 0) * packet.time_base))
        self.packets += 1


class _Residual:
    """How far a decoded track is from the WAV it was encoded from, sample for sample from the start (the mux
    pads or trims only the end): the energy of the difference, dB under the WAV's, over what both hold."""

    def __init__(self, reference: Path):
        self.reader, self.at, self.signal, self.error = WavReader(reference), 0, 0.0, 0.0
        self._held, self._held_at = np.zeros((0, self.reader.channels), np.float32), 0

    def _reference(self, count: int) -> np.ndarray:
        """The reference's next `count` samples (fewer at its end), read a second at a time."""
        offset = self.at - self._held_at
        if offset + count > len(self._held):
            self._held = self.reader.read(self.at, max(count, self.reader.rate))
            self._held_at, offset = self.at, 0
        return self._held[offset : offset + count]

    def add(self, block: np.ndarray) -> None:
        if block.shape[1:] != (self.reader.channels,):
            raise ValueError("channel layouts differ")
        ref = self._reference(len(block))
        self.at += len(block)
        diff = block[: len(ref)] - ref
        self.signal += float(np.vdot(ref, ref))
        self.error += float(np.vdot(diff, diff))

    def db(self) -> float:
        return 10 * np.log10(max(self.error, 1e-20) / max(self.signal, 1e-20))


def measure_delivery(path: Path, stream_index: int | None = None, reference: Path | None = None) -> Delivery:
    """Read a deliverable once: stream layout and tags, exact extents from packet timestamps, and the
    loudness of one audio track decoded from the file; with `reference` (the WAV it was encoded from), how far
    the track is from it (`reference_residual_db`; None when rate or channels differ).

    `stream_index` is the ordinal among audio streams (0 = first audio track, ffmpeg's a:0); None picks the
    track flagged default, else the first. Durations come from packet timestamps (Matroska's stored
    duration counts the AAC codec delay, ~21 ms, that players do not show).
    """

    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise StageError(f"qc: cannot open deliverable {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise StageError(f"qc: deliverable {path} has no video stream")
        video = container.streams.video[0]
        streams = container.streams
        audio = tuple(_track(i, s) for i, s in enumerate(streams.audio))
        subtitles = tuple(_track(i, s) for i, s in enumerate(streams.subtitles))
        if stream_index is None:
            stream_index = next((t.index for t in audio if t.default), 0)
        if audio and not 0 <= stream_index < len(audio):
            raise StageError(f"qc: {path} has {len(audio)} audio streams; no audio stream {stream_index}")
        measured = streams.audio[stream_index] if audio else None
        resampler, residual = None, None
        if measured is not None:
            layout = "mono" if measured.codec_context.channels == 1 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=measured.codec_context.sample_rate)
            meter = loudness.LoudnessMeter(resampler.rate, 1 if layout == "mono" else 2)  # streamed: no whole track
            peak_meter = loudness.PeakMeter()
            residual = _Residual(reference) if reference is not None else None
            if residual is not None and residual.reader.rate != resampler.rate:
                residual = None
        spans = {s.index: _Span() for s in [video, *streams.audio]}
        measured_any = False
        try:
            for packet in container.demux(video, *streams.audio):
                if packet.pts is not None and packet.size:
                    spans[packet.stream.index].add(packet)
                if resampler is not None and measured is not None and packet.stream.index == measured.index:
                    for block in (c.to_ndarray().T for f in packet.decode() for c in resampler.resample(f)):  # type: ignore[arg-type]
                        meter.add(block)
                        peak_meter.add(block)
                        if residual is not None:
                            try:
                                residual.add(block)
                            except ValueError:
                                residual = None
                        measured_any = True
        except av.FFmpegError as exc:
            raise StageError(f"qc: cannot decode deliverable {path}: {exc}") from exc
        metadata = {k.lower(): v for k, v in container.metadata.items()}  # Matroska stores COMMENT
        rate = video.average_rate or video.guessed_rate
        for s in [video, *streams.audio]:  # presentation starts after edit lists / decoder priming
            if s.start_time is not None and s.time_base is not None and spans[s.index].packets:
                spans[s.index].start = max(spans[s.index].start, float(s.start_time * s.time_base))
        video_index = video.index
    used = [span for span in spans.values() if span.packets]
    lufs = peak = float("-inf")
    if measured_any:
        lufs, peak = meter.integrated(), loudness.dbtp(peak_meter.result())
    v = spans[video_index]
    return Delivery(
        path=path,
        duration=max(s.end for s in used) - min(s.start for s in used) if used else 0.0,
        video_duration=v.end - v.start if v.packets else 0.0,
        frame_count=v.packets,
        fps=float(rate) if rate else 0.0,
        audio=audio,
        subtitles=subtitles,
        metadata=metadata,
        measured_audio=stream_index if audio else -1,
        integrated_lufs=lufs,
        true_peak_dbtp=peak,
        reference_residual_db=residual.db() if measured_any and residual is not None else None,
    )


def subtitles_inside(srt_path: Path, duration: float, tolerance: float = 0.001) -> bool:
    """True when every cue of the SRT lies within [0, duration] and none ends before it starts."""

    cues = list(srt.parse(Path(srt_path).read_text(encoding="utf-8-sig")))
    return all(
        0 <= c.start.total_seconds() <= c.end.total_seconds() <= duration + tolerance for c in cues
    )


# The independent ear: multilingual, never the source ASR's tiny.en. No temperature fallback: a line Whisper cannot
# read is a flag either way, and re-decoding it at five temperatures cost 40% more on the demo's pt-BR (same CER).
EAR = {"backend": "faster-whisper", "model": "base", "fallback": False}
WORD_SLACK = 0.3  # seconds: a word heard this close outside a line's span still belongs to it
HEAR_SPAN = 27.5  # seconds of consecutive lines heard in one call: with its padding, one 30 s Whisper window
HEAR_PAD = 0.3  # seconds of audio heard around a group
HEAR_START = 1.0  # a group whose first line starts this close to the track's start is heard from 0
SAME_AUDIO_DB = -25.0  # a line's audio matches what was heard before: residual after a gain match, dB


@dataclass(frozen=True)
class _Group:
    """Consecutive dubbed lines heard together, and the stretch of the delivered audio that holds them."""

    start: float
    end: float
    lines: tuple[FittedLine, ...]


def _groups(lines: tuple[FittedLine, ...]) -> list[_Group]:
    """Lines in start order, cut into runs of at most HEAR_SPAN seconds; each run's audio is padded by HEAR_PAD
    but never past the middle of the gap to the next run, so no run hears a neighbour's speech. A run whose first
    line starts within HEAR_START of the track's start is heard from 0, as the whole track was: cut 0.3 s before
    a line there, Whisper misheard it (a longer lead-in everywhere made Whisper decode far longer on music)."""
    runs: list[list[FittedLine]] = []
    for line in sorted((x for x in lines if x.text.strip()), key=lambda x: (x.start, x.index)):
        if runs and line.end - runs[-1][0].start <= HEAR_SPAN:
            runs[-1].append(line)
        else:
            runs.append([line])
    groups = []
    for i, run in enumerate(runs):
        first, last = run[0].start, max(x.end for x in run)
        lo, hi = (first - HEAR_PAD if first > HEAR_START else 0.0), last + HEAR_PAD
        if i and (previous := max(x.end for x in runs[i - 1])) <= first:
            lo = max(lo, (previous + first) / 2)
        if i + 1 < len(runs) and (following := runs[i + 1][0].start) >= last:
            hi = min(hi, (last + following) / 2)
        groups.append(_Group(max(lo, 0.0), hi, tuple(run)))
    return groups


def load_ear(language: str, ear: dict | None = None) -> None:
    """Load the ear's model for `language` (Whisper base: about 1.6 s), e.g. while the delivery is encoded."""
    options = dict(ear or EAR)
    create_transcriber(options.pop("backend"), **options).load(language)


def back_transcribe(delivered: Path, lines: tuple[FittedLine, ...], language: str, max_cer: float, work: Path,
                    ear: dict | None = None) -> BackTranscription:
    """Transcribe the audio of `delivered` (any file with an audio stream) in `language` and score every
    dubbed line (placed spans in `lines`) against its text; lines with CER above `max_cer` are flagged.

    Only the lines' stretches of the delivered audio are heard, a group of consecutive lines per call
    (`_groups`). What was heard is kept in `work` with the audio it was heard in; a later delivery whose audio
    in a group matches it, line by line (`_changed_lines`), reuses it: after one line is edited only that line's
    stretch is heard again (the rest of the track differs only by the mix's loudness gain and AAC re-encoding
    noise)."""
    options = dict(ear or EAR)
    asr = create_transcriber(options.pop("backend"), **options)
    Path(work).mkdir(parents=True, exist_ok=True)
    speech = Path(work) / "back-transcription.wav"
    with wav_writer(speech, SPEECH_RATE, 1) as writer:  # streamed: never the whole track in memory
        mono = (to_channels(b, 1) for b in decode_audio_blocks(Path(delivered), key="outputs"))
        for block in resample_blocks(mono, MIX_RATE, SPEECH_RATE):
            writer.write(block)
    samples = wavfile.read(str(speech), mmap=True)[1]  # float32 mono, read a group at a time
    heard: dict[int, list[str]] = {}
    groups = _groups(lines)
    again = 0
    for group in groups:
        words, fresh = _hear(asr, samples, group, language, Path(work))
        again += fresh
        heard.update(_assign(words, group.lines))
    log.info("back-transcription %s: %d of %d line groups heard, %d reused", language, again, len(groups),
             len(groups) - again)
    checks = []
    for line in lines:
        if not line.text.strip():
            continue
        text = " ".join(heard.get(line.index, []))
        wer, cer = error_rates(line.text, text, language)
        checks.append(LineCheck(index=line.index, start=round(line.start, 3), end=round(line.end, 3), text=line.text,
                                heard=text, wer=round(wer, 4), cer=round(cer, 4), flagged=cer > max_cer))
    return BackTranscription(language=language, backend=f"{asr.name} {options.get('model', '')}".strip(),
                             max_cer=max_cer, lines=tuple(checks))


def _hear(asr, samples: np.ndarray, group: _Group, language: str, work: Path) -> tuple[list[Word], bool]:
    """Words heard in the group's audio (times on the track's clock), and whether Whisper ran for them. When the
    group was heard before and only some of its lines changed, only their stretch is heard again (Whisper's cost
    grows with the words it decodes: one edited line of a 27 s group costs about half)."""
    a, b = round(group.start * SPEECH_RATE), round(group.end * SPEECH_RATE)
    clip = np.zeros(b - a, np.float32)  # past the end of the track: silence (the extent does not move with its length)
    clip[:max(0, min(b, len(samples)) - a)] = samples[a:b]
    entry = work / f"heard-{fingerprint(asr.fingerprint(), language, a, b)}.npz"
    kept = _kept(entry)
    changed = _changed_lines(kept[0], clip, group) if kept is not None else list(group.lines)
    if kept is not None and not changed:
        words = kept[1]
    else:
        lo, hi = (0.0, len(clip) / SPEECH_RATE) if kept is None or changed is None else _stretch(changed, group)
        i, j = round(lo * SPEECH_RATE), round(hi * SPEECH_RATE)
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            wav = write_wav(Path(tmp) / "group.wav", clip[i:j, None], SPEECH_RATE)
            fresh = [w.model_copy(update={"start": w.start + lo, "end": w.end + lo})
                     for seg in asr.transcribe(wav, language).segments for w in seg.words]
        outside = [w for w in kept[1] if not lo <= (w.start + w.end) / 2 < hi] if kept is not None else []
        words = sorted(outside + fresh, key=lambda w: w.start)
        with atomic_path(entry) as part, open(part, "wb") as handle:
            np.savez(handle, audio=clip, words=np.array(json.dumps([w.model_dump() for w in words])))
    shifted = [w.model_copy(update={"start": w.start + group.start, "end": w.end + group.start}) for w in words]
    return shifted, kept is None or bool(changed)


def _kept(entry: Path) -> tuple[np.ndarray, list[Word]] | None:
    """The audio a group was heard in and the words heard (times from the group's start), if kept."""
    try:
        with np.load(entry, allow_pickle=False) as kept:
            return kept["audio"], [Word.model_validate(w) for w in json.loads(str(kept["words"]))]
    except (OSError, ValueError, KeyError):
        return None


def _changed_lines(before: np.ndarray, now: np.ndarray, group: _Group) -> list[FittedLine] | None:
    """The group's lines whose audio in `now` is not the one in `before`, or None when all must be heard again.

    The same audio is `before` up to one gain (the mix's loudness normalisation moves with any edit) and codec
    noise: the residual after that gain is under SAME_AUDIO_DB of the signal in the line's span (with WORD_SLACK
    either side). The gain is the one most lines agree on (a changed line's own gain would say nothing). When no
    line changed but the clip did (speech between the lines), all is heard again. Re-encoded unchanged audio
    measures -30 to -44 dB; a changed line, above -12 dB."""
    if before.shape != now.shape:
        return None
    limit = 10 ** (SAME_AUDIO_DB / 10)
    parts = [slice(max(0, round((x.start - WORD_SLACK - group.start) * SPEECH_RATE)),
                   max(0, round((x.end + WORD_SLACK - group.start) * SPEECH_RATE))) for x in group.lines]
    sums = [(float(before[p] @ before[p]), float(before[p] @ now[p]), float(now[p] @ now[p])) for p in parts]

    def same(gain: float, bb: float, bn: float, nn: float) -> bool:  # residual energy of now - gain * before
        return nn - 2 * gain * bn + gain * gain * bb <= limit * max(nn, 1e-9)

    gains = [bn / bb for bb, bn, _ in sums if bb > 0] or [0.0]
    gain = max(gains, key=lambda g: sum(same(g, *x) for x in sums))
    changed = [line for line, x in zip(group.lines, sums) if not same(gain, *x)]
    if not changed:
        whole = (float(before @ before), float(before @ now), float(now @ now))
        return None if not same(gain, *whole) else []
    return changed


def _stretch(changed: list[FittedLine], group: _Group) -> tuple[float, float]:
    """The part of the group's clip (seconds from its start) to hear again for `changed` lines: from the first to
    the last, padded as a group is (`_groups`), never into an unchanged neighbour's half of the gap."""
    first, last = min(x.start for x in changed), max(x.end for x in changed)
    lo = first - HEAR_PAD if first > HEAR_START else 0.0
    hi = last + HEAR_PAD
    for line in group.lines:
        if line.end <= first:
            lo = max(lo, (line.end + first) / 2)
        elif line.start >= last:
            hi = min(hi, (last + line.start) / 2)
    return max(lo, group.start) - group.start, min(hi, group.end) - group.start


def _assign(words: list[Word], lines: tuple[FittedLine, ...]) -> dict[int, list[str]]:
    """Each heard word goes to the line whose placed span holds its midpoint, else to the nearest line within
    WORD_SLACK; words heard elsewhere (music, effects) belong to no line."""
    heard: dict[int, list[str]] = {line.index: [] for line in lines}
    for word in words:
        middle = (word.start + word.end) / 2
        best, distance = None, WORD_SLACK
        for line in lines:
            gap = max(line.start - middle, middle - line.end, 0.0)
            if gap < distance:
                best, distance = line.index, gap
        if best is not None:
            heard[best].append(word.text)
    return heard
