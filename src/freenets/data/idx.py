"""The IDX file format of MNIST, Fashion-MNIST, KMNIST and EMNIST (paper, section 5, "Datasets").

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian 32-bit size per dimension, then the values in row-major order, big-endian. The
distributed files are gzipped; :func:`read_idx` recognises gzip by its own magic bytes, so a file
reads the same whether or not it was unpacked, whatever its name.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from freenets.errors import DataError

# Type code -> big-endian numpy dtype, as defined by the format.
_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"
# numpy 1.x holds at most 32 dimensions (2.x: 64); an IDX file of MNIST's kind has 1 to 3.
_MAX_DIMS = 32
_FIX = "replace it with a good copy (a cached download: delete it to download it again)"


# Trailing bytes past the declared data are counted up to this many, not read without end.
_TRAILING_LIMIT = 64 * 2**20
_CHUNK = 2**20


def _physical_memory() -> int | None:
    """Bytes of RAM, where the platform says (Linux, macOS); else None."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - other platforms
        return None


class _Readable(Protocol):
    """What the parser reads from: an open file or a GzipFile (which typeshed does not call IO)."""

    def read(self, size: int = -1, /) -> bytes: ...


def _read(stream: _Readable, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of the stream."""
    parts, remaining = [], size
    while remaining > 0:
        part = stream.read(min(remaining, 64 * _CHUNK))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _trailing(stream: _Readable) -> int:
    """How many bytes are left in ``stream``, counted up to just past ``_TRAILING_LIMIT``."""
    count = 0
    while count <= _TRAILING_LIMIT:
        part = stream.read(_CHUNK)
        if not part:
            break
        count += len(part)
    return count


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not.

    A gzipped file is decompressed as a stream and never past the size its header declares (a
    small file that would unpack to far more, a "gzip bomb", costs no more memory than the
    declared data); a header that declares more data than the machine has memory is refused.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    numpy.ndarray
        The values, in the file's shape and native byte order.

    Raises
    ------
    DataError
        The file is missing, is not IDX, holds fewer or more bytes than its header declares, or
        declares more than the machine's memory.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an IDX file") from None
    with handle:
        packed = handle.read(2) == _GZIP_MAGIC
        handle.seek(0)
        if not packed:
            return _parse(path, handle)
        try:
            with gzip.GzipFile(fileobj=handle) as stream:
                return _parse(path, stream)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            # EOFError: the gzip stream ends early, the mark of a cut-off download.
            raise DataError(f"{path}: damaged or truncated gzip data ({error}); {_FIX}") from None


def _parse(path: Path, stream: _Readable) -> np.ndarray:
    """The array of an IDX stream, checked against its header."""
    magic = _read(stream, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (wrong magic number {magic.hex()}); {_FIX}")
    ndim = magic[3]
    if ndim > _MAX_DIMS:
        raise DataError(f"{path}: the header declares {ndim} dimensions, too many; {_FIX}")
    sizes = _read(stream, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header; {_FIX}")
    shape = tuple(int(size) for size in np.frombuffer(sizes, dtype=">u4", count=ndim))
    dtype = np.dtype(_DTYPES[magic[2]])
    expected = math.prod(shape) * dtype.itemsize
    memory = _physical_memory()
    if memory is not None and expected > memory:
        raise DataError(
            f"{path}: the header declares {expected} bytes of data (shape {shape}), more than "
            f"this machine's memory; {_FIX}"
        )
    data = _read(stream, expected)
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated: the header declares {expected} bytes of data, "
            f"the file has {len(data)}; {_FIX}"
        )
    extra = _trailing(stream)
    if extra > _TRAILING_LIMIT:
        raise DataError(
            f"{path}: more than {_TRAILING_LIMIT} bytes beyond what the header declares "
            f"(shape {shape}); {_FIX}"
        )
    if extra:
        raise DataError(
            f"{path}: {extra} bytes more than the header declares (shape {shape}); {_FIX}"
        )
    values = np.frombuffer(data, dtype=dtype).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_images_labels(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair of IDX files: images (n, rows, columns) and labels (n,) of the same length.

    Raises
    ------
    DataError
        Either file is unreadable, has the wrong number of dimensions, or the counts differ.
    """
    x = read_idx(images)
    if x.ndim != 3:
        raise DataError(
            f"{images}: expected images (3 dimensions), the file has {x.ndim}; "
            "check that the image and label files are not swapped"
        )
    y = read_idx(labels)
    if y.ndim != 1:
        raise DataError(
            f"{labels}: expected labels (1 dimension), the file has {y.ndim}; "
            "check that the image and label files are not swapped"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels; "
            "use the image and label files of the same split"
        )
    return x, y
