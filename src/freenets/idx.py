"""The IDX file format of MNIST, Fashion-MNIST, KMNIST and EMNIST (paper, section 5, "Datasets").

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian 32-bit size per dimension, then the values in row-major order, big-endian. The
distributed files are gzipped; :func:`read_idx` recognises gzip by its own magic bytes, so a file
reads the same whether or not it was unpacked, whatever its name.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

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


def _contents(path: Path) -> bytes:
    """The file's bytes, gunzipped if it is gzip."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an IDX file") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        # EOFError: the gzip stream ends early, the mark of a cut-off download.
        raise DataError(f"{path}: damaged or truncated gzip data ({error}); {_FIX}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not.

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
        The file is missing, is not IDX, or holds fewer or more bytes than its header declares.
    """
    path = Path(path)
    data = _contents(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (wrong magic number {data[:4].hex()}); {_FIX}")
    ndim = data[3]
    if ndim > _MAX_DIMS:
        raise DataError(f"{path}: the header declares {ndim} dimensions, too many; {_FIX}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header; {_FIX}")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise DataError(
            f"{path}: truncated: the header declares {expected} bytes of data, "
            f"the file has {actual}; {_FIX}"
        )
    if actual > expected:
        raise DataError(
            f"{path}: {actual - expected} bytes more than the header declares "
            f"(shape {shape}); {_FIX}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
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
