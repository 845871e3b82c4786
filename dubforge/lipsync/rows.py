"""Per-frame arrays too large to hold for a long source, kept in .npy files and read a window of frames at a time.

A face's landmarks are about 1 KB a frame (131 points, float32): 110 MB for an hour at 30 fps, twice that as
float64 canonical coordinates. The face track keeps them in its compressed npz (written by rows: `write_npz`)
and an uncompressed copy beside it (`spill`); the render and the scorecard read them BLOCK frames at a time
(`Rows`), the scorecard writes its per-frame detections row by row (`row_writer`), and the tracker spills every
detection while it tracks (`row_appender`) and takes exact medians of them a window at a time (`exact_median`).
Reads go through the file, not a memory map: mapped pages would stay resident (and counted in the process's
RSS) once touched.
"""

from __future__ import annotations

import contextlib
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

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


def _header_of(shape: tuple[int, ...], dtype: np.dtype) -> dict:
    return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}


def spill(npz: Path, key: str, out: Path) -> Path:
    """The array `key` of `npz` copied, uncompressed, to the .npy `out` (reused when there), streaming."""
    out = Path(out)
    if out.is_file():
        return out
    with zipfile.ZipFile(npz) as archive, archive.open(f"{key}.npy") as member:
        shape, dtype = _header(member)
        with atomic_path(out) as tmp, open(tmp, "wb") as handle:
            np.lib.format.write_array_header_2_0(handle, _header_of(shape, dtype))
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

    def take(self, index: ArrayLike) -> Iterator[np.ndarray]:
        """The rows at `index` (ascending), in order, from windows of at most `block` rows read one at a time."""
        index = np.asarray(index, np.int64)
        k = 0
        while k < len(index):
            a = int(index[k])
            end = int(np.searchsorted(index, a + self.block))
            yield self.window(a, a + self.block)[index[k:end] - a]
            k = end


@contextlib.contextmanager
def row_writer(path: Path, shape: tuple[int, ...], dtype) -> Iterator[Callable[[np.ndarray], None]]:
    """Write an array of known shape row by row to the .npy `path`: `write(row)` for each row, in order (or
    `write(rows)` for several at once). The file appears (atomically) when the block ends with every row written."""
    dtype = np.dtype(dtype)
    written = 0
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, _header_of(tuple(shape), dtype))

        def write(row: np.ndarray) -> None:
            nonlocal written
            row = np.ascontiguousarray(row, dtype)
            handle.write(row.tobytes())
            written += 1 if row.ndim < len(shape) else len(row)

        yield write
        if written != shape[0]:
            raise ValueError(f"{path}: {written} rows written, {shape[0]} expected")


class Appender:
    """Rows of one shape appended to a .npy file whose length is not known in advance (see `row_appender`)."""

    def __init__(self, handle, row_shape: tuple[int, ...], dtype: np.dtype):
        self._handle, self.row_shape, self.dtype = handle, row_shape, dtype
        self.count = 0

    def __call__(self, row: np.ndarray) -> int:
        """Append one row; returns its index."""
        self._handle.write(np.ascontiguousarray(row, self.dtype).tobytes())
        self.count += 1
        return self.count - 1


@contextlib.contextmanager
def row_appender(path: Path, row_shape: tuple[int, ...], dtype) -> Iterator[Appender]:
    """Append rows to the .npy `path` (`append(row)`), however many: the header is rewritten with the count when
    the block ends (NumPy pads a header so that its first dimension can grow in place), and the file appears
    atomically then. Read it with `Rows`."""
    dtype = np.dtype(dtype)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, _header_of((0, *row_shape), dtype))
        start = handle.tell()
        append = Appender(handle, tuple(row_shape), dtype)
        yield append
        handle.seek(0)
        np.lib.format.write_array_header_2_0(handle, _header_of((append.count, *row_shape), dtype))
        if handle.tell() != start:
            raise ValueError(f"{path}: the .npy header did not keep its length")


def exact_median(windows: Callable[[], Iterable[np.ndarray]], count: int, whole: int = BLOCK) -> np.ndarray:
    """np.median(rows, axis=0) of the `count` floating-point rows that `windows()` yields a window at a time, to the
    bit (a -0.0 may come out as 0.0), holding one window. Up to `whole` rows are stacked and handed to NumPy;
    beyond that the one or two middle order statistics of each column are found by radix selection on the values'
    bits (one pass over the rows per byte: 4 for float32, 8 for float64), and averaged as np.median does. A column
    with a NaN gives NaN, as in NumPy."""
    if count <= whole:
        return np.median(np.concatenate(list(windows())), axis=0)
    ranks = np.array([count // 2 - 1, count // 2] if count % 2 == 0 else [count // 2])
    first = next(iter(windows()))
    dtype, shape = first.dtype, first.shape[1:]
    columns = int(np.prod(shape, dtype=np.int64))
    utype, bits = np.dtype(f"u{dtype.itemsize}"), 8 * dtype.itemsize
    sign = utype.type(1 << (bits - 1))
    prefix = np.zeros((len(ranks), columns), utype)  # the selected keys' leading bits, a byte more per pass
    remaining = np.repeat(ranks[:, None], columns, axis=1)  # rank still wanted within the keys matching the prefix
    nan = np.zeros(columns, bool)
    offsets = np.arange(columns) * 256
    for shift in range(bits - 8, -1, -8):
        counts = np.zeros((len(ranks), columns * 256), np.int64)
        for rows in windows():
            x = np.ascontiguousarray(rows, dtype).reshape(len(rows), columns)
            if shift == bits - 8:
                nan |= np.isnan(x).any(axis=0)
            u = x.view(utype)
            keys = np.where(u >= sign, ~u, u | sign)  # unsigned keys in the floats' order
            digit = ((keys >> shift) & 0xFF).astype(np.int64) + offsets
            for j in range(len(ranks)):
                pick = digit if shift == bits - 8 else digit[(keys >> (shift + 8)) == (prefix[j] >> (shift + 8))]
                counts[j] += np.bincount(pick.ravel(), minlength=columns * 256)
        cumulative = counts.reshape(len(ranks), columns, 256).cumsum(axis=-1)
        chosen = (cumulative <= remaining[..., None]).sum(axis=-1)  # the byte holding the wanted rank
        before = np.take_along_axis(cumulative, np.maximum(chosen - 1, 0)[..., None], axis=-1)[..., 0]
        remaining -= np.where(chosen > 0, before, 0)
        prefix |= chosen.astype(utype) << shift
    values = np.where(prefix >= sign, prefix ^ sign, ~prefix).view(dtype)
    values[:, nan] = np.nan
    return np.median(values.reshape(len(ranks), *shape), axis=0)


def write_npz(path: Path, arrays: dict[str, np.ndarray | tuple[tuple[int, ...], DTypeLike, Iterable[np.ndarray]]]
              ) -> None:
    """np.savez_compressed(path, **arrays), atomically, where an array may also be given as (shape, dtype, blocks of
    rows): written as the blocks come, never whole. np.load reads it as any npz."""
    with atomic_path(Path(path)) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                if isinstance(value, np.ndarray):
                    np.lib.format.write_array(member, value, allow_pickle=False)
                    continue
                shape, dtype, blocks = value
                dtype = np.dtype(dtype)
                np.lib.format.write_array_header_1_0(member, _header_of(tuple(shape), dtype))
                written = 0
                for block in blocks:
                    member.write(np.ascontiguousarray(block, dtype).tobytes())
                    written += len(block)
                if written != shape[0]:
                    raise ValueError(f"{path}: {key}: {written} rows written, {shape[0]} expected")
