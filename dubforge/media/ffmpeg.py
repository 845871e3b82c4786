"""Run the bundled static ffmpeg (imageio-ffmpeg) and turn failures into StageError with its stderr."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import ffmpeg
import imageio_ffmpeg

from dubforge.core.errors import StageError

_TAIL_LINES = 15


@lru_cache(maxsize=1)
def executable() -> str:

    return imageio_ffmpeg.get_ffmpeg_exe()


def _base() -> list[str]:
    return [executable(), "-hide_banner", "-nostdin", "-loglevel", "warning"]


def command(stream_or_args: Any) -> list[str]:
    """The full command line: an ffmpeg-python output stream, or the arguments after `ffmpeg`.

    Path arguments are made absolute so the command does not depend on the working directory.
    """
    if isinstance(stream_or_args, Sequence) and not isinstance(stream_or_args, (str, bytes)):
        args = [str(Path(a).absolute()) if isinstance(a, os.PathLike) else str(a) for a in stream_or_args]
        return [*_base(), "-y", *args]

    return ffmpeg.compile(stream_or_args, cmd=_base(), overwrite_output=True)


def run(stream_or_args: Any, what: str = "ffmpeg") -> str:
    """Run ffmpeg; return its stderr (the log). Raise StageError naming `what` with the log's last lines."""
    cmd = command(stream_or_args)
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise StageError(f"{what}: could not start ffmpeg ({cmd[0]}): {exc}") from exc
    log = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = "\n".join(line for line in log.strip().splitlines()[-_TAIL_LINES:])
        raise StageError(f"{what}: ffmpeg exited with status {proc.returncode}:\n{tail}")
    return log
