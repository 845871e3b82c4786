"""Per-frame arrays too large to hold for a long source, kept in .npy files and read a window of frames at a time.

A face's landmarks are about 1 KB a frame (131 points, float32): 110 MB for an hour at 30 fps, twice that as
float64 canonical coordinates. The face track keeps them in its compressed npz; the render and the scorecard
read them from an uncompressed copy beside it (`spill`), BLOCK frames at a time (`Rows`), and the scorecard
writes its per-frame detections row by row (`row_writer`). Reads go through the file, not a memory map: mapped
pages would stay resident (and counted in the process's RSS) once touched.
"""

from __future__ import annotations

import contextlib
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dubforge.core.files import atomic_path

BLOCK = 512  # frames per window: about 0.5 MB of landmarks


def _header(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    if fortran:
        raise ValueError("Fortran-ordered arrays cannot be read by rows")
    return tuple(shape), np.dtype(dtype)


def spill(npz: Path, key: str, out: Path) -> Path:
    """The array `key` of `npz` copied, uncompressed, to the .npy `out` (reused when there), streaming."""
    out = Path(out)
    if out.is_file():
        return out
    with zipfile.ZipFile(npz) as archive, archive.open(f"{key}.npy") as member:
        shape, dtype = _header(member)
        with atomic_path(out) as tmp, open(tmp, "wb") as handle:
            np.lib.format.write_array_header_2_0(handle, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                          "fortran_order": False, "shape": shape})
            shutil.copyfileobj(member, handle, 1 << 20)
    return out


class Rows:
    """Rows (the first axis) of a C-ordered .npy file, read in windows; `row(i)` keeps one BLOCK-row window."""

    def __init__(self, path: Path, block: int = BLOCK):
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            self.shape, self.dtype = _header(handle)
            self._offset = handle.tell()
        self._row = int(np.prod(self.shape[1:], dtype=np.int64))
        self.block = block
        self._start, self._window = 0, np.zeros((0, *self.shape[1:]), self.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def window(self, a: int, b: int) -> np.ndarray:
        """Rows [a, b) as a fresh array."""
        a, b = max(a, 0), min(b, len(self))
        count = max(b - a, 0)
        data = np.fromfile(self.path, self.dtype, count=count * self._row,
                           offset=self._offset + a * self._row * self.dtype.itemsize)
        return data.reshape(count, *self.shape[1:])

    def row(self, i: int) -> np.ndarray:
        if not self._start <= i < self._start + len(self._window):
            self._start = i - i % self.block
            self._window = self.window(self._start, self._start + self.block)
        return self._window[i - self._start]

    def windows(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) for consecutive windows of `block` rows."""
        for a in range(0, len(self), self.block):
            yield a, self.window(a, a + self.block)


@contextlib.contextmanager
def row_writer(path: Path, shape: tuple[int, ...], dtype) -> Iterator[Callable[[np.ndarray], None]]:
    """Write an array of known shape row by row to the .npy `path`: `write(row)` for each row, in order. The
    file appears (atomically) when the block ends with every row written."""
    dtype = np.dtype(dtype)
    written = 0
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": False, "shape": tuple(shape)})

        def write(row: np.ndarray) -> None:
            nonlocal written
            handle.write(np.ascontiguousarray(row, dtype).tobytes())
            written += 1

        yield write
        if written != shape[0]:
            raise ValueError(f"{path}: {written} rows written, {shape[0]} expected")
