"""Mux deliverables: per-language MP4s and one multi-track MKV master, plus a provenance sidecar.

The picture is always stream-copied. Every audio input is a WAV on the video's timeline (t = 0 is the first
video frame, as ingest and the mixer write them); it is encoded to AAC and padded/trimmed to exactly the
video's duration, so the output is no longer than the picture.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import langcodes
import srt

from dubforge.core.errors import StageError
from dubforge.core.files import atomic_path, sha256_file, write_json_atomic
from dubforge.core.languages import LanguageError, iso639_2, normalise_language
from dubforge.media import ffmpeg
from dubforge.media.probe import probe

AUDIO_RATE = 48_000
_DELIVERED = (".mp4", ".mov", ".m4a")
# Picture codecs an MP4 carries; any other (ProRes, DNxHD/HR, raw...) is delivered stream-copied in a MOV.
MP4_VIDEO_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4", "mpeg2video", "mpeg1video"})


def delivery_suffix(video_codec: str) -> str:
    """The deliverable's container for a picture codec: MP4 when it can carry the picture, else MOV."""
    return ".mp4" if video_codec in MP4_VIDEO_CODECS else ".mov"
AUDIO_BITRATE = "192k"

# Tags the MP4 muxer writes in iTunes form; any other key needs QuickTime 'mdta' tags to survive.
_ITUNES_KEYS = {
    "title", "author", "artist", "album_artist", "album", "date", "encoder", "comment", "genre", "copyright",
    "composer", "grouping", "lyrics", "description", "synopsis", "show", "episode_id", "network", "track", "disc",
    "compilation", "keywords", "media_type", "hd_video", "gapless_playback", "category", "year",
}


def _video_timing(video: Path) -> tuple[float, float]:
    """(duration of the video stream, start of the video relative to the file's first timestamp)."""

    info = probe(video, key="mux.video")
    return info.duration, info.start_time - info.file_start_time


def _audio_filter(duration: float) -> str:
    n = round(duration * AUDIO_RATE)
    return (
        f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo,"
        f"apad=whole_len={n},atrim=end_sample={n}"
    )


def _clipped_srt(srt_path: Path, duration: float, tmp_dir: Path) -> Path | None:
    """A copy of the SRT with cues cut to [0, duration] (so no cue lengthens the file); None if empty."""

    try:
        cues = list(srt.parse(Path(srt_path).read_text(encoding="utf-8-sig")))
    except (OSError, UnicodeDecodeError, srt.SRTParseError) as exc:
        raise StageError(f"mux: cannot read subtitles {srt_path}: {exc}") from exc
    end = timedelta(seconds=duration)
    kept: list[Any] = []
    for cue in cues:
        if cue.start >= end or not cue.content.strip():
            continue
        kept.append(srt.Subtitle(len(kept) + 1, max(cue.start, timedelta(0)), min(cue.end, end), cue.content))
    if not kept:
        return None
    fd, name = tempfile.mkstemp(suffix=".srt", dir=tmp_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(srt.compose(kept))
    return Path(name)


def _metadata_args(metadata: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in metadata.items():
        args += ["-metadata", f"{key}={value}"]
    return args


def mux_language(
    video: Path,
    audio_wav: Path,
    language: str,
    out_mp4: Path,
    subtitles: Path | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """One deliverable MP4 (or MOV, by `out_mp4`'s suffix: see `delivery_suffix`): the source picture copied, `audio_wav` as AAC 48 kHz stereo tagged with
    `language` (ISO 639-2/T), optional SRT as a mov_text track, container `metadata`, faststart."""
    video, audio_wav, out_mp4 = Path(video).absolute(), Path(audio_wav).absolute(), Path(out_mp4).absolute()
    metadata = dict(metadata or {})
    duration, offset = _video_timing(video)
    lang = iso639_2(language)
    flags = "+faststart"
    if any(key.lower() not in _ITUNES_KEYS for key in metadata):
        flags += "+use_metadata_tags"  # otherwise custom keys (ai_modified=...) are silently dropped
    with tempfile.TemporaryDirectory(prefix="dubforge-mux-") as tmp:
        srt_file = _clipped_srt(subtitles, duration, Path(tmp)) if subtitles else None
        args: list[Any] = ["-i", video, "-itsoffset", f"{offset:.6f}", "-i", audio_wav]
        if srt_file:
            args += ["-itsoffset", f"{offset:.6f}", "-i", srt_file]
        args += ["-map", "0:v:0", "-map", "1:a:0"] + (["-map", "2:s:0"] if srt_file else [])
        args += ["-c:v", "copy", "-filter:a:0", _audio_filter(duration), "-c:a", "aac", "-b:a", AUDIO_BITRATE]
        args += ["-metadata:s:a:0", f"language={lang}", "-disposition:a:0", "default"]
        if srt_file:
            args += ["-c:s", "mov_text", "-metadata:s:s:0", f"language={lang}", "-disposition:s:0", "0"]
        args += _metadata_args(metadata) + ["-movflags", flags]
        with atomic_path(out_mp4) as part:
            ffmpeg.run([*args, part], what=f"mux {out_mp4.name}")
            if srt_file:
                disable_subtitle_tracks(part)
    return out_mp4


def burn_subtitles(mp4: Path, srt_path: Path, out_mp4: Path, preset: str = "veryfast", crf: int = 18) -> Path:
    """A captioned copy of a deliverable: the SRT rendered into the picture (libass), the audio copied."""
    mp4, out_mp4 = Path(mp4).absolute(), Path(out_mp4).absolute()
    with tempfile.TemporaryDirectory(prefix="dubforge-burn-") as tmp:
        cues = Path(tmp) / "cues.srt"  # a plain path: the filter's argument syntax reserves ':' ',' and quotes
        cues.write_bytes(Path(srt_path).read_bytes())
        fonts = Path(tmp) / "fonts"  # matplotlib's DejaVu Sans: text renders on machines without system fonts
        fonts.mkdir()
        spec = find_spec("matplotlib")
        roots = (spec.submodule_search_locations or []) if spec else []
        for font in Path(roots[0]).glob("mpl-data/fonts/ttf/DejaVuSans*.ttf") if roots else ():
            (fonts / font.name).symlink_to(font)
        style = "subtitles=" + f"{cues}:fontsdir={fonts}:force_style='FontName=DejaVu Sans'"
        args = ["-i", mp4, "-map", "0:v:0", "-map", "0:a?", "-vf", style, "-c:v", "libx264",
                "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", "-c:a", "copy", "-map_metadata", "0",
                "-movflags", "+faststart+use_metadata_tags"]
        with atomic_path(out_mp4) as part:
            ffmpeg.run([*args, part], what=f"burn subtitles into {out_mp4.name}")
    return out_mp4


def _boxes(data: bytearray | memoryview, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO BMFF boxes in data[start:end]: (type, payload start, box end)."""
    while start + 8 <= end:
        size = int.from_bytes(data[start:start + 4], "big")
        kind, header = bytes(data[start + 4:start + 8]), 8
        if size == 1:
            size, header = int.from_bytes(data[start + 8:start + 16], "big"), 16
        elif size == 0:
            size = end - start
        if size < header:
            return
        yield kind, start + header, start + size
        start += size


def disable_subtitle_tracks(mp4: Path) -> None:
    """Clear the 'enabled' flag of the MP4's subtitle tracks. FFmpeg's MP4 muxer enables the first track of each
    kind when none is marked default, so players showed the subtitles on; viewers now turn them on themselves."""
    with open(mp4, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        at = 0
        while at + 8 <= size:  # top-level boxes by their headers: the media data is never read
            handle.seek(at)
            header = handle.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - at
            if length < 8:
                return
            if kind == b"moov":
                handle.seek(at)
                _disable_in_moov(handle, at, bytearray(handle.read(length)))
            at += length


def _disable_in_moov(handle, offset: int, data: bytearray) -> None:
    for kind, body, end in _boxes(data, 0, len(data)):
        for trak_kind, trak, trak_end in _boxes(data, body, end):
            if trak_kind != b"trak":
                continue
            children = {k: (b, e) for k, b, e in _boxes(data, trak, trak_end)}
            media = children.get(b"mdia")
            handler = next((data[b + 8:b + 12] for k, b, _ in _boxes(data, *media) if k == b"hdlr"), b"") if media else b""
            if bytes(handler) in (b"sbtl", b"text", b"subt") and b"tkhd" in children:
                flags_at = children[b"tkhd"][0] + 3  # version (1 byte), then 24-bit flags; bit 0 = enabled
                handle.seek(offset + flags_at)
                handle.write(bytes([data[flags_at] & ~1 & 0xFF]))


def _matroska_tag(code: str) -> str:
    """ISO 639-2/B ('ger') for a BCP-47 code or a stored tag ('deu', 'de'); an unknown tag as it is."""
    if code == "und":
        return code
    try:
        return iso639_2(normalise_language(code), bibliographic=True)
    except (LanguageError, LookupError, ValueError):
        return code


def _title(language: str, suffix: str = "") -> str:
    """Track title in the language's own name ("Español (dubbed)"); the code if names are not installed."""
    name = language
    if find_spec("language_data") is not None:  # langcodes' optional name data

        name = langcodes.Language.get(language).autonym()
        name = name[:1].upper() + name[1:]
    return f"{name} ({suffix})" if suffix else name


def master_audio(delivered_mp4: Path, mix_wav: Path, video: Path) -> Path:
    """The audio a master track takes from a language: the delivered MP4 (its AAC copied) when its picture is the
    source's stream-copied picture, on the same clock; else (a lip-sync render, whose picture starts at 0) the
    language's mix WAV, placed on the master's picture like any WAV, so the source's A/V offset is kept."""
    info = probe(video, key="mux.video")
    same_clock = abs(probe(delivered_mp4, key="mux.delivered").start_time - info.start_time) < 0.5 / info.fps
    return Path(delivered_mp4) if same_clock else Path(mix_wav)


def mux_master(
    video: Path,
    original_audio: Path | None,
    source_language: str,
    tracks: Sequence[tuple[str, Path, Path | None]],
    out_mkv: Path,
    metadata: Mapping[str, Any] | None = None,
    original_stream: int = 0,
) -> Path:
    """One MKV master: the picture copied; the original audio first (title "Original", default track; copied
    untouched when `original_audio` is the video itself, and then every other audio stream of the source follows
    with its own language tag; `original_stream` is the one dubbed);
    then per language (code, audio WAV or delivered MP4 whose AAC is copied, SRT or None) an AAC track titled "<Language> (dubbed)" and a subtitle
    track, all tagged with ISO 639-2/B codes (Matroska convention)."""
    video, out_mkv = Path(video).absolute(), Path(out_mkv).absolute()
    duration, offset = _video_timing(video)
    shift = ["-itsoffset", f"{offset:.6f}"]
    inputs: list[Any] = ["-i", video]
    n_inputs = 1
    maps: list[str] = ["-map", "0:v:0"]
    codecs: list[Any] = ["-c:v", "copy", "-c:s", "srt"]
    tags: list[str] = ["-disposition:v:0", "default"]
    audio: list[tuple[str, Path, str, int]] = []  # (ISO 639-2/B tag, file, title, audio stream in the file)
    if original_audio and Path(original_audio).absolute() == video:  # every source stream, the one dubbed first
        stored = probe(video, key="mux.video").audio_languages
        for k in [original_stream] + [k for k in range(len(stored)) if k != original_stream]:
            tag = source_language if k == original_stream and stored[k] == "und" else stored[k]
            title = "Original" if k == original_stream else _title(tag, "original") if tag != "und" else f"Original {k + 1}"
            audio.append((_matroska_tag(tag), video, title, k))
    elif original_audio:
        audio.append((_matroska_tag(source_language), Path(original_audio), "Original", 0))
    audio += [(_matroska_tag(lang), Path(wav), _title(lang, "dubbed"), 0) for lang, wav, _ in tracks]
    for i, (lang, source, title, stream) in enumerate(audio):
        if source.absolute() == video:  # the source's own audio: copied untouched, in sync by construction
            maps += ["-map", f"0:a:{stream}"]
            codecs += [f"-c:a:{i}", "copy"]
        elif source.suffix.lower() in _DELIVERED:  # a delivered MP4: its AAC is already on the picture's clock
            inputs += ["-i", source.absolute()]
            codecs += [f"-c:a:{i}", "copy"]
        else:
            inputs += [*shift, "-i", source.absolute()]
            codecs += [f"-filter:a:{i}", _audio_filter(duration), f"-c:a:{i}", "aac", f"-b:a:{i}", AUDIO_BITRATE]
        if source.absolute() != video:
            maps += ["-map", f"{n_inputs}:a:0"]
            n_inputs += 1
        tags += [f"-metadata:s:a:{i}", f"language={lang}",
                 f"-metadata:s:a:{i}", f"title={title}", f"-disposition:a:{i}", "default" if i == 0 else "0"]
    with tempfile.TemporaryDirectory(prefix="dubforge-mux-") as tmp:
        n_subs = 0
        for lang, _, srt_path in tracks:
            srt_file = _clipped_srt(srt_path, duration, Path(tmp)) if srt_path else None
            if srt_file is None:
                continue
            inputs += [*shift, "-i", srt_file]
            maps += ["-map", f"{n_inputs}:s:0"]
            n_inputs += 1
            tags += [f"-metadata:s:s:{n_subs}", f"language={iso639_2(lang, bibliographic=True)}",
                     f"-metadata:s:s:{n_subs}", f"title={_title(lang)}", f"-disposition:s:{n_subs}", "0"]
            n_subs += 1
        args = [*inputs, *maps, *codecs, *tags, *_metadata_args(metadata or {}), "-default_mode", "passthrough"]
        args += ["-fflags", "+bitexact"]  # fixed segment/track UIDs: equal inputs give equal bytes
        with atomic_path(out_mkv) as part:
            ffmpeg.run([*args, part], what=f"mux {out_mkv.name}")
    return out_mkv


def write_provenance(path: Path, record: Mapping[str, Any]) -> Path:
    """Write `<deliverable>.provenance.json` beside `path`: the caller's `record` (generator, actions,
    models, attestation, input hashes...) plus the deliverable's name, size and sha256, which bind the
    sidecar to the exact file. Returns the sidecar's path."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"provenance: deliverable {path} does not exist")
    sidecar = path.with_name(path.name + ".provenance.json")
    data = dict(record)
    data["asset"] = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    return write_json_atomic(sidecar, data)
