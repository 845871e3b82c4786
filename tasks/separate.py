"""Separation: what plays under the dub.

`provided`: the studio's M&E stem, conformed to 48 kHz stereo and the video's length (replace mode).
`none`: no stem; the original mix plays ducked under the dub (voice-over mode).
A separation backend (demucs) from the registry's `separate` stage makes dialogue and M&E stems (replace mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dubforge.core.contracts import SourceMedia, Stems
from dubforge.core.errors import StageError
from dubforge.media.audio import MIX_RATE, decode_audio_blocks, fitted, wav_writer
from dubforge.models.base import create_separator


def separate(media: SourceMedia, music_effects: Path | None, mode: str, work_dir: Path,
             options: dict[str, Any] | None = None, models_file: Path | None = None) -> Stems:
    """`mode`: provided | none | the name of a separation backend (demucs), built with `options`."""
    if mode not in ("provided", "none"):

        if media.mix_wav is None:
            raise StageError(f"{mode} separation needs the source's audio, and the video has none")
        return create_separator(mode, models_file, **(options or {})).separate(media.mix_wav, Path(work_dir))
    if mode == "none":
        return Stems(background=media.mix_wav, mode="voice_over", backend="none (original audio ducked)")
    if music_effects is None:
        raise StageError("separation 'provided' needs the M&E stem (source.music_effects)")
    out = Path(work_dir) / "music_effects.wav"
    with wav_writer(out, MIX_RATE, 2) as writer:  # streamed: conformed block by block
        stem = decode_audio_blocks(music_effects, key="source.music_effects")
        for block in fitted(stem, round(media.duration * MIX_RATE), 2):
            writer.write(block)
    return Stems(background=out, mode="replace", backend="provided M&E stem")
