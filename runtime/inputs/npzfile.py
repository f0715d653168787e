"""Model inputs from an .npz without holding the file: the runner's --inputs.

An .npz is a zip of .npy members (np.savez stores them, np.savez_compressed deflates them). Each
member's .npy header is read on opening (numpy.lib.format), so names, shapes and dtypes are known
before any data is; rows [start, stop) of an array are then read by streaming its member, a piece at
a time, into an array of just those rows. Arrays must be C-ordered to be read by rows (Fortran-ordered
ones can only be read whole) and are never unpickled. Floats are checked finite as they are read.

NpzInputs keeps the runner's contract for an inputs file (labels under y/labels/label, one integer
per input, read whole; at least one numeric input array with rows, every float finite); `load_npz` is
the same contract read whole into memory, for the callers that want the arrays.
"""

from __future__ import annotations

import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib import format as npy

from edgepipe.devices import EdgepipeError

LABEL_KEYS = ("y", "labels", "label")
PIECE = 1 << 20  # bytes read from a member at a time
SCAN_BYTES = 4 << 20  # rows checked at a time by scan()
_HEADERS = {1: npy.read_array_header_1_0, 2: npy.read_array_header_2_0}


def _skip(f, n: int) -> None:
    """Read past n bytes of a member, a piece at a time (zipfile's own seek reads 16 MB pieces)."""
    while n > 0:
        got = len(f.read(min(n, PIECE)))
        if not got:
            raise EOFError
        n -= got


@dataclass(frozen=True)
class ArrayInfo:
    name: str
    member: str  # its name in the zip
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes of .npy header before the data

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 0

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class NpzReader:
    """An .npz's `arrays` (name -> ArrayInfo), from the headers; data is read on request, the zip opened for
    each read. A partial read of a member cannot check its CRC; reading it to the end (chunks, scan) does."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgepipeError(f"{self.path}: inputs file not found")
        self.arrays: dict[str, ArrayInfo] = {}
        with self._zipfile() as z:
            for info in z.infolist():
                if not info.is_dir():
                    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    self.arrays[name] = self._header(z, info, name)

    def _zipfile(self) -> zipfile.ZipFile:
        """The zip, opened anew for each read (nothing stays open between calls)."""
        try:
            return zipfile.ZipFile(self.path)
        except Exception as exc:
            raise self.unreadable(type(exc).__name__) from None

    def unreadable(self, why: str) -> EdgepipeError:
        return EdgepipeError(f"{self.path}: not a readable .npz file ({why}); write it with numpy.savez")

    def _header(self, z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> ArrayInfo:
        try:
            with z.open(info) as f:
                major, _ = npy.read_magic(f)
                if major not in _HEADERS:
                    raise ValueError(f".npy format version {major}")
                shape, fortran, dtype = _HEADERS[major](f)
                offset = f.tell()
        except Exception as exc:
            raise self.unreadable(type(exc).__name__) from None
        if dtype.hasobject:
            raise EdgepipeError(
                f"{self.path}: '{name}' holds Python objects (dtype {dtype}), which are never "
                "unpickled; save numeric arrays"
            )
        a = ArrayInfo(name, info.filename, tuple(shape), dtype, bool(fortran), offset)
        if info.file_size != offset + a.nbytes:
            raise self.unreadable(f"'{name}' holds {info.file_size - offset} bytes of data, its header says {a.nbytes}")
        return a

    def info(self, name: str) -> ArrayInfo:
        if name not in self.arrays:
            raise EdgepipeError(f"{self.path}: no array named '{name}' (has: {', '.join(self.arrays) or 'none'})")
        return self.arrays[name]

    def _by_rows(self, name: str) -> ArrayInfo:
        a = self.info(name)
        if a.fortran and len(a.shape) > 1:
            raise EdgepipeError(
                f"{self.path}: '{name}' is saved in Fortran order, so its rows cannot be read a batch "
                "at a time; save it with numpy.ascontiguousarray(x)"
            )
        if not a.shape:
            raise EdgepipeError(f"{self.path}: '{name}' has shape []: no rows; give at least one input")
        return a

    @staticmethod
    def _open(z: zipfile.ZipFile, a: ArrayInfo, skip_rows: int = 0):
        f = z.open(a.member)
        try:
            _skip(f, a.offset + skip_rows * a.row_bytes)
        except BaseException:
            f.close()
            raise
        return f

    def _fill(self, f, a: ArrayInfo, count: int, first: int, check: bool = True) -> np.ndarray:
        out = np.empty((count, *a.shape[1:]), a.dtype)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        pos = 0
        while pos < len(buf):
            got = f.readinto(buf[pos : pos + PIECE])
            if not got:
                raise EOFError
            pos += got
        if check and a.dtype.kind == "f" and not np.isfinite(out).all():
            bad = int(out.size - np.isfinite(out).sum())
            raise EdgepipeError(
                f"{self.path}: '{a.name}' holds {bad} NaN or infinite values in rows {first}–"
                f"{first + count - 1}; inputs must be finite numbers"
            )
        return out

    def rows(self, name: str, start: int = 0, stop: int | None = None, check: bool = True) -> np.ndarray:
        """Rows [start, stop) of array `name` (clipped to its rows), read by streaming its member."""
        a = self._by_rows(name)
        stop = a.rows if stop is None else max(0, min(stop, a.rows))
        start = max(0, min(start, stop))
        try:
            with self._zipfile() as z, self._open(z, a, start) as f:
                return self._fill(f, a, stop - start, start, check)
        except EdgepipeError:
            raise
        except Exception as exc:
            raise self.unreadable(type(exc).__name__) from None

    def chunks(self, names: list[str], size: int, check: bool = True) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(first row, {name: rows}) for consecutive `size` rows of the named arrays, each member read once
        from start to end (so a deflated one is never decompressed twice, and every CRC is checked)."""
        infos = [self._by_rows(k) for k in names]
        n = max(a.rows for a in infos)
        with ExitStack() as stack:
            try:
                z = stack.enter_context(self._zipfile())
                files = [stack.enter_context(self._open(z, a)) for a in infos]
                for start in range(0, n, max(1, size)):
                    out = {
                        a.name: self._fill(f, a, max(0, min(start + size, a.rows) - start), start, check)
                        for a, f in zip(infos, files)
                    }
                    yield start, out
                for f in files:
                    f.read(1)  # at the end: zipfile checks the member's CRC there
            except EdgepipeError:
                raise
            except Exception as exc:
                raise self.unreadable(type(exc).__name__) from None

    def read(self, name: str, check: bool = True) -> np.ndarray:
        """The whole array (Fortran-ordered ones too), its floats checked finite unless check=False."""
        a = self.info(name)
        if not a.fortran or len(a.shape) < 2:
            return self.rows(name, check=check) if a.shape else self._whole(a, check).reshape(())
        return self._whole(a, check).reshape(a.shape[::-1]).transpose()

    def _whole(self, a: ArrayInfo, check: bool) -> np.ndarray:
        flat = ArrayInfo(a.name, a.member, (int(np.prod(a.shape, dtype=np.int64)),), a.dtype, False, a.offset)
        try:
            with self._zipfile() as z, self._open(z, flat) as f:
                return self._fill(f, flat, flat.rows, 0, check)
        except EdgepipeError:
            raise
        except Exception as exc:
            raise self.unreadable(type(exc).__name__) from None

    def scan(self, names: list[str]) -> None:
        """Read every row of the named arrays, SCAN_BYTES at a time: each float finite (the same one-line
        error as for an array in memory, with the whole array's count) and each member intact."""
        for k in names:
            a = self._by_rows(k)
            bad, size = 0, max(1, SCAN_BYTES // max(a.row_bytes, 1))
            for _, part in self.chunks([k], size, check=False):
                v = part[k]
                bad += int(v.size - np.isfinite(v).sum()) if v.dtype.kind == "f" else 0
            if bad:
                raise EdgepipeError(
                    f"{self.path}: '{k}' holds {bad} NaN or infinite values; inputs must be finite numbers"
                )


def chunk_rows(row_bytes: int, budget: int) -> int:
    """Rows per chunk within `budget` bytes; a multiple of 256 (the batch predict() runs) when that many fit."""
    rows = max(1, budget // max(row_bytes, 1))
    return rows - rows % 256 if rows >= 256 else rows


class NpzInputs:
    """An inputs file under the runner's contract, open for reading by rows: `names` (the input arrays),
    `labels` (read whole: one integer per input, or None), `n` (rows of the first input). scan=True reads
    every row once, a few MB at a time, so a NaN or a damaged member fails now rather than mid-run."""

    def __init__(self, path: Path | str, scan: bool = True):
        self.reader = r = NpzReader(path)
        self.path, self.file_bytes = r.path, r.path.stat().st_size
        label_key = next((k for k in LABEL_KEYS if k in r.arrays), None)
        self.names = [k for k in r.arrays if k != label_key]
        if not self.names:
            raise EdgepipeError(f"{r.path}: holds no input arrays (only labels)")
        for k in self.names:
            a = r.arrays[k]
            if a.dtype.kind not in "fiub":
                raise EdgepipeError(
                    f"{r.path}: '{k}' has dtype {a.dtype}, not a numeric array; save numbers (float32 for images)"
                )
            if not a.shape or a.shape[0] == 0:
                raise EdgepipeError(f"{r.path}: '{k}' has shape {list(a.shape)}: no rows; give at least one input")
        self.labels = None
        if label_key is not None:
            a = r.arrays[label_key]
            if a.dtype.kind not in "iu" or len(a.shape) != 1:
                raise EdgepipeError(
                    f"{r.path}: labels are {a.dtype} of shape {list(a.shape)}; save class indices "
                    "(integers, one per input)"
                )
            self.labels = r.read(label_key)
        if scan:
            r.scan(self.names)

    @property
    def n(self) -> int:
        return self.reader.arrays[self.names[0]].rows

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        return {k: self.reader.arrays[k].dtype for k in self.names}

    @property
    def row_bytes(self) -> int:
        return sum(self.reader.arrays[k].row_bytes for k in self.names)

    def head(self, stop: int) -> dict[str, np.ndarray]:
        """The first `stop` rows of each input array (fewer where it has fewer)."""
        return {k: self.reader.rows(k, 0, stop) for k in self.names}

    def chunks(self, budget: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        return self.reader.chunks(self.names, chunk_rows(self.row_bytes, budget))


class ArrayInputs:
    """Inputs already in memory (decoded images), behind the same few calls as NpzInputs."""

    file_bytes = None

    def __init__(self, arrays: dict[str, np.ndarray], labels: np.ndarray | None = None):
        self.arrays, self.labels, self.names = arrays, labels, list(arrays)
        self.n = len(arrays[self.names[0]])
        self.dtypes = {k: v.dtype for k, v in arrays.items()}
        self.row_bytes = sum(v[:1].nbytes for v in arrays.values())

    def head(self, stop: int) -> dict[str, np.ndarray]:
        return {k: v[:stop] for k, v in self.arrays.items()}

    def chunks(self, budget: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        size = chunk_rows(self.row_bytes, budget)
        for start in range(0, self.n, size):
            yield start, {k: v[start : start + size] for k, v in self.arrays.items()}


class ShapeGroups(ArrayInputs):
    """Inputs of several sizes (images under a keep-ratio contract without padding), one group per size,
    behind the same calls: `head` gives rows of the largest group, `chunks` never mixes sizes, and
    `others()` the groups whose sizes are measured beside it (at most MAX_SHAPES in all)."""

    MAX_SHAPES = 4

    def __init__(self, groups: list[dict[str, np.ndarray]], labels: np.ndarray | None = None):
        self.groups = sorted(groups, key=lambda g: -len(next(iter(g.values()))))
        super().__init__(self.groups[0], labels)
        self.n = sum(len(next(iter(g.values()))) for g in self.groups)

    def chunks(self, budget: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        start = 0
        for g in self.groups:
            part = ArrayInputs(g)
            for offset, arrays in part.chunks(budget):
                yield start + offset, arrays
            start += part.n

    def others(self) -> list[dict[str, np.ndarray]]:
        return self.groups[1 : self.MAX_SHAPES]


def load_npz(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(input arrays, labels or None) of an inputs file, read whole into memory, checked as the runner checks them."""
    from edgepipe.runtime.inputs.checks import check_arrays

    src = NpzInputs(path, scan=False)
    arrays = {k: src.reader.read(k, check=False) for k in src.names}
    check_arrays(arrays, str(src.path))
    return arrays, src.labels
