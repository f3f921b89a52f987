"""Dataset loaders: the IDX reader, the MNIST family from a folder or a download, user files."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import struct
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from freenets import cli
from freenets.data import download, images, load_dataset, truncate, validation_split
from freenets.data.idx import read_idx, read_images_labels
from freenets.errors import DataError

# IDX type codes, written here independently of the reader.
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
MNIST_NAMES = images.MNIST.files


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, _CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gzipped: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def image_set(rng: np.random.Generator, n: int, shape=(3, 4), classes=10, offset=0):
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = (np.arange(n) % classes + offset).astype(np.uint8)
    return x, y


def write_image_dir(folder: Path, names, rng, *, gzipped=(True, False, True, False), **kw):
    """Four IDX files under ``names``: 12 training and 5 test images, some gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = image_set(rng, 12, **kw), image_set(rng, 5, **kw)
    arrays = (train[0], train[1], test[0], test[1])
    for name, array, packed in zip(names, arrays, gzipped, strict=True):
        write_idx(folder / (f"{name}.gz" if packed else name), array, packed)
    return arrays


# --- the IDX reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_round_trips(tmp_path, gzipped, dtype):
    array = (np.arange(2 * 3 * 5) * 7 - 11).reshape(2, 3, 5).astype(dtype)
    if dtype == np.uint8:
        array = (np.arange(30) * 7 % 256).reshape(2, 3, 5).astype(np.uint8)
    path = write_idx(tmp_path / "a-idx3", array, gzipped)
    read = read_idx(path)
    assert read.dtype == array.dtype and read.shape == (2, 3, 5)
    np.testing.assert_array_equal(read, array)


def test_read_idx_recognises_gzip_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    raw = write_idx(tmp_path / "labels.gz", labels, gzipped=False)
    packed = write_idx(tmp_path / "labels", labels, gzipped=True)
    np.testing.assert_array_equal(read_idx(raw), labels)
    np.testing.assert_array_equal(read_idx(packed), labels)


def test_wrong_magic_names_the_file(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError, match="bad-idx1-ubyte: not an IDX file"):
        read_idx(path)
    (tmp_path / "tiny").write_bytes(b"\x00")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "tiny")


@pytest.mark.parametrize("gzipped", [False, True])
def test_truncated_file_is_reported(tmp_path, gzipped):
    data = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    path = tmp_path / "cut-idx3-ubyte"
    if gzipped:
        packed = gzip.compress(data)
        path.write_bytes(packed[: len(packed) // 2])
        message = "truncated gzip"
    else:
        path.write_bytes(data[:-7])
        message = "truncated: the header declares 100 bytes of data, the file has 93"
    with pytest.raises(DataError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_header_and_trailing_bytes(tmp_path):
    data = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    (tmp_path / "head").write_bytes(data[:9])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(tmp_path / "head")
    (tmp_path / "long").write_bytes(data + b"\x00\x00")
    with pytest.raises(DataError, match="2 bytes more than the header declares"):
        read_idx(tmp_path / "long")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="absent-idx1-ubyte: no such file"):
        read_idx(tmp_path / "absent-idx1-ubyte")


def test_count_mismatch_names_both_files(tmp_path):
    x = write_idx(tmp_path / "x", np.zeros((6, 2, 2), dtype=np.uint8))
    y = write_idx(tmp_path / "y", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="6 images but .*y holds 5 labels") as error:
        read_images_labels(x, y)
    assert str(x) in str(error.value)


def test_swapped_files_are_reported(tmp_path):
    x = write_idx(tmp_path / "x", np.zeros((6, 2, 2), dtype=np.uint8))
    y = write_idx(tmp_path / "y", np.zeros(6, dtype=np.uint8))
    with pytest.raises(DataError, match="expected images"):
        read_images_labels(y, x)


# --- the MNIST family from a folder -------------------------------------------------------------


def test_mnist_from_data_dir(tmp_path):
    arrays = write_image_dir(tmp_path, MNIST_NAMES, np.random.default_rng(0))
    dataset = load_dataset("mnist", tmp_path)
    assert dataset.name == "mnist" and dataset.n_classes == 10 and dataset.n_features == 12
    assert dataset.x_train.dtype == torch.float32 and dataset.y_train.dtype == torch.int64
    np.testing.assert_allclose(dataset.x_train.numpy(), arrays[0].reshape(12, -1) / 255.0)
    np.testing.assert_array_equal(dataset.y_test.numpy(), arrays[3])
    assert 0.0 <= float(dataset.x_test.min()) and float(dataset.x_test.max()) <= 1.0


@pytest.mark.parametrize("name", ["fashion-mnist", "kmnist"])
def test_other_datasets_read_the_standard_names(tmp_path, name):
    write_image_dir(tmp_path, MNIST_NAMES, np.random.default_rng(1), gzipped=(False,) * 4)
    dataset = load_dataset(name, str(tmp_path))
    assert dataset.x_train.shape == (12, 12) and dataset.x_test.shape == (5, 12)


def test_emnist_letters_orientation_and_labels(tmp_path):
    names = images.emnist("letters").files
    x_train, y_train, _, _ = write_image_dir(
        tmp_path / "gzip", names, np.random.default_rng(2), classes=26, offset=1
    )
    dataset = load_dataset("emnist-letters", tmp_path)
    assert dataset.n_classes == 26
    np.testing.assert_array_equal(dataset.y_train.numpy(), y_train.astype(np.int64) - 1)
    # Stored transposed: pixel (row a, column b) of the file is pixel (b, a) of the image.
    rows, columns = x_train.shape[1:]
    image = dataset.x_train[7].reshape(columns, rows).numpy()
    np.testing.assert_allclose(image, x_train[7].T / 255.0)


def test_emnist_default_split_is_balanced(tmp_path):
    names = images.emnist("balanced").files
    write_image_dir(tmp_path, names, np.random.default_rng(3), classes=47)
    assert load_dataset("emnist", tmp_path).n_classes == 47


def test_missing_file_in_data_dir(tmp_path):
    write_image_dir(tmp_path, MNIST_NAMES, np.random.default_rng(4))
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: no such file.*--data-dir"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="no such directory"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_labels_out_of_range(tmp_path):
    write_image_dir(tmp_path, MNIST_NAMES, np.random.default_rng(5), classes=12)
    with pytest.raises(DataError, match="labels run from 0 to 11, mnist has 0..9"):
        load_dataset("mnist", tmp_path)


def test_count_mismatch_through_the_loader(tmp_path):
    write_image_dir(tmp_path, MNIST_NAMES, np.random.default_rng(6))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match="12 images but .* 11 labels"):
        load_dataset("mnist", tmp_path)


# --- downloads ---------------------------------------------------------------------------------


def _mirror(tmp_path: Path, rng) -> tuple[str, dict[str, str], tuple[np.ndarray, ...]]:
    """A local mirror of gzipped MNIST-named files: its file:// URL, their MD5s, the arrays."""
    folder = tmp_path / "mirror"
    arrays = write_image_dir(folder, MNIST_NAMES, rng, gzipped=(True,) * 4)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return folder.as_uri() + "/", md5, arrays


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FREENETS_DATA", str(root))
    return root


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FREENETS_DATA", str(tmp_path))
    assert download.cache_root() == tmp_path
    monkeypatch.delenv("FREENETS_DATA")
    assert download.cache_root() == Path.home() / ".cache" / "freenets"


def test_download_into_the_cache_then_reuse(tmp_path, cache):
    url, md5, arrays = _mirror(tmp_path, np.random.default_rng(7))
    dead = (tmp_path / "dead").as_uri() + "/"  # the first mirror fails, the second serves
    source = dataclasses.replace(images.KMNIST, mirrors=(dead, url), md5=md5)
    x_train, y_train, _, y_test = images.load_images(source)
    np.testing.assert_allclose(x_train, arrays[0].reshape(12, -1) / 255.0)
    np.testing.assert_array_equal(y_test, arrays[3])
    assert sorted(p.name for p in (cache / "kmnist").iterdir()) == sorted(md5)
    for path in (tmp_path / "mirror").iterdir():
        path.unlink()  # now only the cache has the files
    np.testing.assert_array_equal(images.load_images(source)[1], y_train)


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, cache):
    url, _, _ = _mirror(tmp_path, np.random.default_rng(8))
    # The real published sums: the test's files cannot match them.
    source = dataclasses.replace(images.MNIST, mirrors=(url,))
    with pytest.raises(DataError, match="could not download train-images-idx3-ubyte.gz") as error:
        images.load_images(source)
    assert "differs from the published f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(error.value)
    assert not (cache / "mnist").exists() or not any((cache / "mnist").iterdir())


def test_failed_download_says_what_to_do(tmp_path, cache):
    source = dataclasses.replace(images.FASHION_MNIST, system_dirs=(), mirrors=("file:///nil/",))
    with pytest.raises(DataError, match="could not download .*--data-dir DIR"):
        images.load_images(source)
    with pytest.raises(DataError, match="no such file; download it or pass --data-dir"):
        images.load_images(source, allow_download=False)


class _Response(io.BytesIO):
    headers = {"Content-Length": "0"}


def test_download_through_a_stand_in_opener(tmp_path, cache):
    payloads = {"a": b"first file", "b": b"second file"}
    requested: list[str] = []

    def opener(url: str, timeout: float) -> _Response:
        requested.append(url)
        if url.startswith("https://down/"):
            raise urllib.error.URLError("name or service not known")
        return _Response(payloads[url.rsplit("/", 1)[1]])

    md5 = hashlib.md5(payloads["a"]).hexdigest()
    path = download.fetch("a", md5, ["https://down/", "https://up/"], cache, opener=opener)
    assert requested == ["https://down/a", "https://up/a"] and path.read_bytes() == payloads["a"]
    with pytest.raises(DataError, match="https://down/b: name or service not known; .*MD5"):
        download.fetch("b", md5, ["https://down/", "https://up/"], cache, opener=opener)
    assert not (cache / "b").exists()


def test_emnist_download_extracts_its_split_from_the_zip(tmp_path, cache):
    rng = np.random.default_rng(9)
    names = images.emnist("digits").files
    packed = write_image_dir(tmp_path / "unpacked", names, rng, gzipped=(True,) * 4)
    archive = tmp_path / "mirror" / "gzip.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in names:
            bundle.write(tmp_path / "unpacked" / f"{name}.gz", f"gzip/{name}.gz")
    source = dataclasses.replace(
        images.emnist("digits"),
        mirrors=(archive.parent.as_uri() + "/",),
        md5={"gzip.zip": download.md5sum(archive)},
    )
    _, y_train, _, _ = images.load_images(source)
    np.testing.assert_array_equal(y_train, packed[1])
    assert (cache / "emnist" / f"{names[0]}.gz").is_file()


def test_published_checksums_are_listed_for_every_download():
    for source in (images.MNIST, images.FASHION_MNIST, images.KMNIST, images.emnist("letters")):
        wanted = {source.archive} if source.archive else {f"{n}.gz" for n in source.files}
        assert set(source.md5) == wanted
        assert all(len(md5) == 32 and int(md5, 16) >= 0 for md5 in source.md5.values())
        assert all(mirror.endswith("/") for mirror in source.mirrors)


# --- the user's own data ------------------------------------------------------------------------


def test_npz_pixels_and_text_labels(tmp_path):
    rng = np.random.default_rng(10)
    x = rng.integers(0, 256, size=(40, 2, 3), dtype=np.uint8)
    y = np.array(["cat", "dog"] * 20)
    np.savez(tmp_path / "pets.npz", X=x, y=y)
    dataset = load_dataset(str(tmp_path / "pets.npz"))
    assert dataset.name == "pets" and dataset.n_classes == 2 and dataset.n_features == 6
    assert dataset.x_train.shape == (32, 6) and dataset.x_test.shape == (8, 6)
    # uint8 is scaled by 255: every row is one of the file's rows / 255.
    scaled = dataset.x_train.numpy() * 255.0
    np.testing.assert_allclose(scaled, np.rint(scaled), atol=1e-3)
    rows = {tuple(r) for r in x.reshape(40, -1).tolist()}
    assert all(tuple(r) in rows for r in np.rint(scaled).astype(int).tolist())
    assert torch.bincount(dataset.y_test).tolist() == [4, 4]


def test_npz_features_scaled_per_feature_on_training_data(tmp_path):
    x = np.stack([np.arange(50.0) * 10 - 100, np.full(50, 3.0)], axis=1)
    np.savez(tmp_path / "t.npz", X=x, y=np.arange(50) % 2)
    dataset = load_dataset(tmp_path / "t.npz".__str__())
    train = dataset.x_train.numpy()
    assert train[:, 0].min() == 0.0 and train[:, 0].max() == 1.0
    assert np.all(train[:, 1] == 0.0)  # a constant feature
    assert float(dataset.x_test.min()) >= 0.0 and float(dataset.x_test.max()) <= 1.0


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "nolabels.npz", X=np.zeros((4, 2)))
    with pytest.raises(DataError, match="nolabels.npz: expected arrays 'X' and 'y'"):
        load_dataset(str(tmp_path / "nolabels.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz file"):
        load_dataset(str(tmp_path / "junk.npz"))
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match="single.npz: a single array"):
        load_dataset(str(tmp_path / "single.npz"))
    with pytest.raises(DataError, match="absent.npz: no such file"):
        load_dataset(str(tmp_path / "absent.npz"))
    np.savez(tmp_path / "shape.npz", X=np.zeros((4, 2)), y=np.zeros(5))
    with pytest.raises(DataError, match="same n"):
        load_dataset(str(tmp_path / "shape.npz"))
    np.savez(tmp_path / "few.npz", X=np.zeros((5, 2)), y=np.array([0, 0, 0, 0, 1]))
    with pytest.raises(DataError, match="at least 2 samples"):
        load_dataset(str(tmp_path / "few.npz"))


def _csv(path: Path, rows: int = 30) -> Path:
    lines = ["height,species,width"]
    lines += [f"{i},{'ab'[i % 2]},{i * 0.5}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_with_a_target_column(tmp_path):
    path = _csv(tmp_path / "plants.csv")
    dataset = load_dataset(str(path), target="species")
    assert dataset.n_features == 2 and dataset.n_classes == 2
    assert dataset.x_train.shape[0] + dataset.x_test.shape[0] == 30
    # "a" is class 0: its heights are even, and height and width scale together.
    train = dataset.x_train.numpy()
    np.testing.assert_allclose(train[:, 0], train[:, 1], atol=1e-6)


def test_csv_integer_labels_sort_as_numbers(tmp_path):
    lines = ["odd,label"] + [f"{i % 2},{[2, 10][i % 2]}" for i in range(20)]
    (tmp_path / "n.csv").write_text("\n".join(lines))
    dataset = load_dataset(str(tmp_path / "n.csv"))
    # 2 < 10 as numbers (not as text): label 2, the even rows, is class 0.
    assert torch.equal(dataset.x_train[:, 0], dataset.y_train.float())


def test_csv_errors(tmp_path):
    path = _csv(tmp_path / "plants.csv")
    with pytest.raises(DataError, match="no column 'label' .*--target COLUMN"):
        load_dataset(str(path))
    with pytest.raises(DataError, match="line 2: 'a' is not a number"):
        load_dataset(str(path), target="width")
    (tmp_path / "ragged.csv").write_text("a,label\n1,0\n2\n")
    with pytest.raises(DataError, match="line 3 has 1 fields"):
        load_dataset(str(tmp_path / "ragged.csv"))
    (tmp_path / "empty.csv").write_text("a,label\n")
    with pytest.raises(DataError, match="header row and at least one data row"):
        load_dataset(str(tmp_path / "empty.csv"))


# --- load_dataset, truncation --------------------------------------------------------------------


def test_load_dataset_is_backward_compatible_and_checks_names():
    digits = load_dataset("digits", None)
    assert digits.x_train.shape == (1437, 64) and digits.n_classes == 10
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="--target"):
        load_dataset("digits", target="label")


def test_truncate_is_stratified_and_fixed():
    digits = load_dataset("digits")
    small = truncate(digits, 101)
    assert small.x_train.shape == (101, 64) and torch.equal(small.x_test, digits.x_test)
    counts = torch.bincount(small.y_train, minlength=10)
    assert counts.sum() == 101 and counts.min() >= 9 and counts.max() <= 11
    again = load_dataset("digits", train_size=101)
    assert torch.equal(again.x_train, small.x_train)
    rows = {tuple(r) for r in digits.x_train.tolist()}
    assert all(tuple(r) in rows for r in small.x_train.tolist())
    for size in (0, 1438):
        with pytest.raises(DataError, match="--train-size"):
            truncate(digits, size)


def test_sweep_jobs_load_the_truncated_training_set():
    from freenets.experiments import backends as experiments

    argv = ["sweep", "--datasets", "digits", "--neurons", "2", "--out", "x", "--train-size", "150"]
    assert cli._build_parser().parse_args(argv).train_size == 150
    assert experiments._dataset("digits", None, 150).x_train.shape == (150, 64)


def test_too_few_samples_for_validation():
    x, y = torch.zeros(3, 2), torch.tensor([0, 1, 2])
    with pytest.raises(DataError, match="too few to hold out a validation split"):
        validation_split(x, y, 0.1, seed=0)


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--dataset", "cifar"], 2, "unknown dataset 'cifar'"),
        (["--dataset", "mnist", "--target", "y"], 2, "--target names the label column"),
        (["--train-size", "0"], 2, "--train-size must be at least 1"),
        (["--dataset", "absent.npz"], 1, "absent.npz: no such file"),
        (["--dataset", "mnist", "--data-dir", "nowhere"], 1, "nowhere: no such directory"),
    ],
)
def test_cli_data_errors_are_one_line(tmp_path, monkeypatch, run_cli, argv, status, message):
    monkeypatch.chdir(tmp_path)
    result = run_cli(["train", *argv, "--quiet"])
    assert result.code == status and result.one_error_line(message), result.err
    assert not (tmp_path / "runs").exists()


def test_cli_trains_on_a_csv_file(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "plants.csv", rows=60)
    argv = ["train", "--dataset", "plants.csv", "--target", "species", "--neurons", "3"]
    code, out, err = run_cli([*argv, "--epochs", "2", "--train-size", "40", "--quiet"])
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-plants-k3") and (run / "summary.json").is_file()
    config = (run / "config.json").read_text()
    assert '"train_size": 40' in config and str(tmp_path / "plants.csv") in config


def test_cli_datasets_lists_every_name(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("FREENETS_DATA", str(tmp_path))
    code, out, _ = run_cli(["datasets"])
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and "fashion-mnist" in names and "emnist-letters" in names
    assert f"downloads into {tmp_path / 'mnist'}" in out


# --- real data (CI installs Debian's dataset-fashion-mnist) -----------------------------------


@pytest.mark.slow
def test_fashion_mnist_freeevolve_reaches_80_percent():
    from freenets.training.config import TrainConfig
    from freenets.training.models import train_freeevolve

    if not Path(images.FASHION_MNIST.system_dirs[0]).is_dir() and not os.environ.get("CI"):
        pytest.skip("needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    dataset = load_dataset("fashion-mnist", allow_download=False)
    assert dataset.x_train.shape == (60000, 784) and dataset.x_test.shape == (10000, 784)
    assert torch.bincount(dataset.y_test).tolist() == [1000] * 10
    config = TrainConfig.of(dataset="fashion-mnist", n_neurons=30, epochs=3, seed=0)
    split = validation_split(
        dataset.x_train, dataset.y_train, config.data.val_fraction, config.seed
    )
    freeevolve = train_freeevolve(dataset, split, config)
    assert freeevolve.test_accuracy >= 0.80


def test_gzip_bomb_is_refused_without_unpacking_it(tmp_path):
    """A small gzip file that unpacks to far more than its IDX header declares."""
    import tracemalloc
    import zlib

    header = idx_bytes(np.zeros(10, dtype=np.uint8))
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    chunks = [packer.compress(header)]
    zeros = bytes(2**20)
    chunks += [packer.compress(zeros) for _ in range(200)]  # 200 MiB unpacked
    chunks.append(packer.flush())
    bomb = tmp_path / "bomb-idx1-ubyte.gz"
    bomb.write_bytes(b"".join(chunks))
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="bytes beyond what the header declares"):
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # chunks of 1 MiB, never the 200 MiB


def test_header_declaring_more_than_the_memory_is_refused(tmp_path):
    header = b"\x00\x00\x08\x02" + (2**32 - 1).to_bytes(4, "big") * 2
    path = tmp_path / "huge-idx2-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(100)))
    with pytest.raises(DataError, match="more than this machine's memory"):
        read_idx(path)
