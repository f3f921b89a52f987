"""MNIST, Fashion-MNIST, KMNIST and EMNIST from their IDX files (paper, section 5, "Datasets").

Files are looked for, in order: in ``data_dir`` when one is given (and only there); in the system
folders a distribution installs (Debian's ``dataset-fashion-mnist`` puts Fashion-MNIST in
``/usr/share/datasets/fashion-mnist``); in the download cache (:func:`freenets.data.download.cache_root`);
otherwise they are downloaded into the cache from the official mirrors, checked against the
published MD5 sums (the ones torchvision's ``datasets/mnist.py`` lists). A file may be gzipped or
not, with or without its ``.gz`` suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freenets.data import download
from freenets.data.download import Opener
from freenets.data.idx import read_images_labels
from freenets.errors import DataError

# (x_train, y_train, x_test, y_test): pixels (n, rows * columns) float32 in [0, 1], labels int64.
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class ImageSource:
    """Where one IDX image dataset's four files are found and how to read them."""

    name: str  # the folder in the download cache
    files: tuple[str, str, str, str]  # train images, train labels, test images, test labels
    n_classes: int
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # downloadable file -> published MD5
    archive: str | None = None  # the files come inside this zip, downloaded whole
    system_dirs: tuple[str, ...] = ()
    label_offset: int = 0  # subtracted from every label: EMNIST letters count from 1
    transposed: bool = False  # EMNIST stores each image transposed relative to MNIST


MNIST = ImageSource(
    name="mnist",
    files=_MNIST_NAMES,
    n_classes=10,
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

FASHION_MNIST = ImageSource(
    name="fashion-mnist",
    files=_MNIST_NAMES,
    n_classes=10,
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

KMNIST = ImageSource(
    name="kmnist",
    files=_MNIST_NAMES,
    n_classes=10,
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    md5={
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    },
)

_EMNIST_MIRRORS = (
    "https://biometrics.nist.gov/cs_links/EMNIST/",
    "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/",
)
# Classes per EMNIST split (Cohen et al., 2017); letters are labelled 1..26.
EMNIST_CLASSES = {"balanced": 47, "letters": 26, "digits": 10, "byclass": 62, "bymerge": 47}


def emnist(split: str) -> ImageSource:
    """The EMNIST ``split``: one of :data:`EMNIST_CLASSES`."""
    if split not in EMNIST_CLASSES:
        raise DataError(
            f"unknown EMNIST split {split!r}; choose one of: {', '.join(EMNIST_CLASSES)}"
        )
    prefix = f"emnist-{split}"
    return ImageSource(
        name="emnist",
        files=(
            f"{prefix}-train-images-idx3-ubyte",
            f"{prefix}-train-labels-idx1-ubyte",
            f"{prefix}-test-images-idx3-ubyte",
            f"{prefix}-test-labels-idx1-ubyte",
        ),
        n_classes=EMNIST_CLASSES[split],
        mirrors=_EMNIST_MIRRORS,
        md5={"gzip.zip": "58c8d27c78d21e728a6bc7b3cc06412e"},
        archive="gzip.zip",
        label_offset=1 if split == "letters" else 0,
        transposed=True,
    )


def _find(directory: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``directory`` or in its ``gzip`` folder (EMNIST's zip layout)."""
    for folder in (directory, directory / "gzip"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _find_all(source: ImageSource, directory: Path) -> list[Path] | None:
    found = [_find(directory, name) for name in source.files]
    paths = [path for path in found if path is not None]
    return paths if len(paths) == len(found) else None


def _download(source: ImageSource, opener: Opener | None) -> list[Path]:
    cache = download.cache_root() / source.name
    if source.archive is not None:
        archive = download.fetch(
            source.archive, source.md5[source.archive], source.mirrors, cache, opener=opener
        )
        members = [f"gzip/{name}.gz" for name in source.files]
        return download.extract(archive, members, cache)
    return [
        download.fetch(f"{name}.gz", source.md5[f"{name}.gz"], source.mirrors, cache, opener=opener)
        for name in source.files
    ]


def locate(
    source: ImageSource,
    data_dir: str | Path | None = None,
    *,
    allow_download: bool = True,
    opener: Opener | None = None,
) -> list[Path]:
    """The dataset's four files, downloading them if they are nowhere else.

    Raises
    ------
    DataError
        A file is missing from ``data_dir``, or the download failed or was not allowed.
    """
    if data_dir is not None:
        directory = Path(data_dir)
        if not directory.is_dir():
            raise DataError(f"{directory}: no such directory; pass --data-dir an existing folder")
        paths: list[Path] = []
        for name in source.files:
            path = _find(directory, name)
            if path is None:
                raise DataError(
                    f"{directory / name}: no such file (nor {name}.gz); put the {source.name} "
                    "IDX files there, or leave out --data-dir to find or download them"
                )
            paths.append(path)
        return paths
    cache = download.cache_root() / source.name
    for directory in (*map(Path, source.system_dirs), cache):
        found_all = _find_all(source, directory)
        if found_all is not None:
            return found_all
    if not allow_download:
        raise DataError(
            f"{cache / source.files[0]}: no such file; download it or pass --data-dir DIR"
        )
    return _download(source, opener)


def load_images(
    source: ImageSource,
    data_dir: str | Path | None = None,
    *,
    allow_download: bool = True,
    opener: Opener | None = None,
) -> Arrays:
    """Read an IDX image dataset: flattened pixels scaled to [0, 1], labels from 0.

    Raises
    ------
    DataError
        A file is missing, damaged, of the wrong kind, or its labels are out of range.
    """
    paths = locate(source, data_dir, allow_download=allow_download, opener=opener)
    arrays: list[np.ndarray] = []
    for images, labels in ((paths[0], paths[1]), (paths[2], paths[3])):
        x, y = read_images_labels(images, labels)
        if x.size == 0:
            raise DataError(
                f"{images}: holds no pixels (shape {x.shape}); check that the file belongs to "
                f"{source.name}, or replace it with a good copy"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"{images}: the pixels contain NaN or infinity; replace the file")
        if y.dtype.kind == "f" and not (np.isfinite(y) & (y == np.round(y))).all():
            raise DataError(
                f"{labels}: the labels are not all whole numbers; check that the file holds "
                f"{source.name} labels"
            )
        if source.transposed:
            x = x.transpose(0, 2, 1)
        # uint8 pixels 0..255; other types are scaled by their own maximum.
        scale = 255.0 if x.dtype == np.uint8 else max(float(np.abs(x).max(initial=0)), 1.0)
        pixels = (x.reshape(x.shape[0], -1) / scale).astype(np.float32)
        classes = y.astype(np.int64) - source.label_offset
        if classes.size and (classes.min() < 0 or classes.max() >= source.n_classes):
            low, high = source.label_offset, source.n_classes - 1 + source.label_offset
            raise DataError(
                f"{labels}: labels run from {classes.min() + source.label_offset} to "
                f"{classes.max() + source.label_offset}, {source.name} has {low}..{high}; "
                f"check that the file belongs to {source.name}"
            )
        arrays += [pixels, classes]
    if arrays[0].shape[1] != arrays[2].shape[1]:
        raise DataError(
            f"{paths[0]} and {paths[2]} hold images of different sizes; "
            "use the training and test files of one dataset"
        )
    return arrays[0], arrays[1], arrays[2], arrays[3]
