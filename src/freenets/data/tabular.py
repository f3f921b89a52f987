"""A user's own data: features and labels from a ``.npz`` or ``.csv`` file.

A ``.npz`` file holds two arrays, the features ``X`` (n, ...) and the labels ``y`` (n,); a
``.csv`` file has a header row, one column of labels (named by ``target``, ``label`` by default)
and numeric features in the others. Labels of any kind become class indices 0..C-1 in sorted
order (text that is all numbers in numeric order); labels a classifier cannot learn from
(continuous values, one class, nearly a class per sample) are refused (:func:`check_classes`).
A fixed stratified 20% of the samples is the test set, the same for every run seed. Features are
scaled to [0, 1]: ``uint8`` arrays (pixels) by 255, anything else per feature by the training
part's minimum and maximum, test values clipped into [0, 1].
"""

from __future__ import annotations

import csv
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from freenets.errors import DataError, TargetError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

DEFAULT_TARGET = "label"
TEST_FRACTION = 0.2
SUFFIXES = (".npz", ".csv")


def is_data_file(name: str) -> bool:
    """Whether ``name`` is a path to a user's data file (by its suffix) rather than a dataset."""
    return Path(name).suffix.lower() in SUFFIXES


# What a damaged archive can raise from zipfile, zlib and numpy's .npy reader: a bad zip, a
# corrupt deflate stream, an unknown compression method or zip version (NotImplementedError), an
# encrypted member (RuntimeError), a short record (struct.error), a bad .npy header (ValueError).
_NPZ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    EOFError,
    ValueError,
    OSError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    MemoryError,
)
_SAVEZ = "save the data with numpy.savez(path, X=features, y=labels)"


def _check_member_size(path: Path, archive: zipfile.ZipFile, key: str) -> None:
    """Refuse an .npy member whose header declares more data than it holds, before numpy
    allocates the declared size (a damaged header can declare terabytes)."""
    info = archive.getinfo(f"{key}.npy")
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            return  # numpy's own reader checks what it can
        header = stream.tell()
    if dtype.hasobject:
        return  # refused as pickled data by np.load(allow_pickle=False)
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header:
        raise DataError(
            f"{path}: array {key!r} declares shape {shape} ({declared} bytes), the file holds "
            f"{info.file_size - header}; the file is damaged, {_SAVEZ}"
        )


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single array (.npy), not an .npz archive; {_SAVEZ}")
        with loaded as arrays:
            keys = set(arrays.files)
            x_key = "X" if "X" in keys else "x"
            if x_key not in keys or "y" not in keys:
                raise DataError(
                    f"{path}: expected arrays 'X' and 'y', found {sorted(keys) or 'none'}; {_SAVEZ}"
                )
            for key in (x_key, "y"):
                _check_member_size(path, arrays.zip, key)
            return arrays[x_key], arrays["y"]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except _NPZ_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(
            f"{path}: not a readable .npz file ({reason}); write it with numpy.savez"
        ) from None


def _read_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    rows = [row for row in rows if row]
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    if target not in header:
        raise DataError(
            f"{path}: no column {target!r} (columns: {', '.join(map(repr, header[:8]))}"
            f"{', ...' if len(header) > 8 else ''}); name the label column with --target COLUMN"
        )
    label_column = header.index(target)
    labels: list[str] = []
    features: list[list[float]] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        labels.append(row[label_column].strip())
        values = row[:label_column] + row[label_column + 1 :]
        try:
            features.append([float(value) for value in values])
        except ValueError:
            bad = next(v for v in values if not _is_number(v))
            raise DataError(
                f"{path}: line {line}: {bad!r} is not a number; features must be numeric "
                f"(is {target!r} the label column?)"
            ) from None
    return np.asarray(features, dtype=np.float64), np.asarray(labels)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_numbers(labels: np.ndarray) -> np.ndarray:
    """Text labels that are all integers, or all numbers, as such; other text as it is."""
    for kind in (np.int64, np.float64):
        try:
            return labels.astype(kind)
        except (ValueError, OverflowError):  # not integers (numbers), or beyond int64
            continue
    if labels.dtype.kind == "S":
        # scikit-learn refuses bytes; latin-1 decodes every byte, in the same sorted order.
        return np.char.decode(labels, "latin-1")
    return labels


def check_classes(path: Path, labels: np.ndarray) -> None:
    """Refuse labels a classifier cannot learn from, by scikit-learn's rules.

    ``check_classification_targets`` refuses continuous values; its warning that more than half
    the samples have a class of their own (a regression target, most likely) is a refusal here,
    as such a class could not be split between training and test data anyway; and a single class
    leaves nothing to learn.

    Raises
    ------
    TargetError
        One line naming the file and what its labels look like.
    """
    from sklearn.utils.multiclass import type_of_target

    kind = type_of_target(labels, input_name="y")
    classes = np.unique(labels)
    if kind not in ("binary", "multiclass"):
        example = ", ".join(str(value) for value in classes[:3])
        raise TargetError(
            f"{path}: the labels are {kind} values ({example}, ...), not classes; a classifier "
            "needs integers or text (is it a regression target?)"
        )
    if classes.size < 2:
        raise TargetError(
            f"{path}: every label is {classes[0].item()!r}: one class leaves a classifier "
            "nothing to learn; the labels need at least two classes"
        )
    if labels.size > 20 and classes.size > round(0.5 * labels.size):
        raise TargetError(
            f"{path}: {classes.size} classes among {labels.size} samples, more than 50% of them "
            "distinct: it looks like a regression target, not classes"
        )


def _class_indices(path: Path, labels: np.ndarray) -> np.ndarray:
    """Labels of any kind as 0..C-1; text that is all numbers sorts as numbers."""
    if labels.dtype.kind in "US":
        labels = _as_numbers(labels)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise DataError(f"{path}: the labels contain NaN or infinity; remove those samples")
    check_classes(path, labels)
    _, indices = np.unique(labels, return_inverse=True)
    return indices.reshape(-1).astype(np.int64)


def _scale(x_train: np.ndarray, x_test: np.ndarray, pixels: bool) -> tuple[np.ndarray, np.ndarray]:
    if pixels:
        return x_train / 255.0, x_test / 255.0
    low = x_train.min(axis=0)
    span = x_train.max(axis=0) - low
    span[span == 0] = 1.0  # a constant feature maps to 0
    return (x_train - low) / span, np.clip((x_test - low) / span, 0.0, 1.0)


def load_table(path: str | Path, target: str | None = None) -> Arrays:
    """Load a user's ``.npz`` or ``.csv`` file, split off the test set and scale the features.

    Parameters
    ----------
    path : str or Path
        The file; its suffix says how to read it.
    target : str, optional
        The label column of a CSV file (default ``label``); not used for ``.npz``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(x_train, y_train, x_test, y_test)``, features float32 in [0, 1], labels int64.

    Raises
    ------
    DataError
        The file is missing or malformed, or too small to split.
    """
    from sklearn.model_selection import train_test_split

    path = Path(path)
    if path.suffix.lower() == ".npz":
        x, labels = _read_npz(path)
    else:
        x, labels = _read_csv(path, target or DEFAULT_TARGET)
    if x.ndim < 2 or labels.ndim != 1 or x.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: X has shape {x.shape} and y {labels.shape}; "
            "expected X (n, features...) and y (n,) with the same n"
        )
    pixels = x.dtype == np.uint8
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: X holds {x.dtype} values; the features must be numeric")
    if labels.dtype.kind not in "biufUS":
        raise DataError(
            f"{path}: y holds {labels.dtype} values; the labels must be numbers or text"
        )
    n_features = math.prod(x.shape[1:])
    if x.shape[0] == 0 or n_features == 0:
        raise DataError(
            f"{path}: X has shape {x.shape}, no samples or no features; "
            "expected X (n, features...) with n and features at least 1"
        )
    x = x.reshape(x.shape[0], n_features).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: X contains NaN or infinity; remove or fill those values")
    y = _class_indices(path, labels)
    try:
        # The test split is part of the data's definition, the same for every seed.
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=TEST_FRACTION, stratify=y, random_state=0
        )
    except ValueError as error:
        raise DataError(
            f"{path}: cannot hold out a stratified test set ({error}); "
            "every class needs at least 2 samples"
        ) from None
    x_train, x_test = _scale(x_train, x_test, pixels)
    return (
        x_train.astype(np.float32),
        y_train.astype(np.int64),
        x_test.astype(np.float32),
        y_test.astype(np.int64),
    )
