"""A still photo as source: probe it and turn it (with its speech) into a still video.

The rest of the pipeline then treats the portrait like any video: the audio stages dub its speech and
the lip-sync renderer animates the face (portrait mode: warped mouth, blinks, small head motion).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dubforge.core.files import atomic_path, fingerprint
from dubforge.media.audio import MIX_RATE, decode_audio_blocks, regrouped
from dubforge.media.probe import PORTRAIT_FPS, probe_portrait, read_image


def still_video(image: Path, audio: Path, work_dir: Path) -> Path:
    """H.264 + AAC MP4 showing `image` for the length of `audio` (reused when already made)."""

    out = Path(work_dir) / f"portrait-{fingerprint(image, audio)}.mp4"
    if out.exists():
        return out
    info = probe_portrait(image, audio)
    rgb = read_image(image, "source.image")
    total = round(info.duration * MIX_RATE)  # the sound stops with the picture
    with atomic_path(out) as tmp, av.open(str(tmp), "w") as container:
        video = container.add_stream("libx264", rate=PORTRAIT_FPS)
        video.width, video.height, video.pix_fmt = info.width, info.height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "16"}
        sound = container.add_stream("aac", rate=MIX_RATE)
        sound.layout = "stereo"
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for index in range(info.frame_count):
            frame.pts = index
            frame.time_base = 1 / PORTRAIT_FPS
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        start = 0  # the speech is decoded a block at a time (stereo at MIX_RATE), never whole
        for block in regrouped(decode_audio_blocks(audio, "source.audio"), 1024):
            block = block[: total - start]
            if not len(block):
                break
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp", layout="stereo")
            chunk.sample_rate, chunk.pts, chunk.time_base = MIX_RATE, start, Fraction(1, MIX_RATE)
            for packet in sound.encode(chunk):
                container.mux(packet)
            start += len(block)
        for packet in sound.encode():
            container.mux(packet)
    return out
