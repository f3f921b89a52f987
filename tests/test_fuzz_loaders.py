"""Fuzzed input files for every loader: IDX, the MNIST family from a folder, .npz, .csv, the CLI.

Every malformed file must end in :class:`DataError`, one line that names the file, never another
exception, a hang or a traceback. A file that loads must give arrays of the declared shape. TALLY,
printed when the module ends, counts the inputs tried and how each ended.
"""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from freenets.data import images, load_dataset
from freenets.data.idx import read_idx
from freenets.data.tabular import load_table
from freenets.errors import DataError

TALLY = {"inputs tried": 0, "errors reported": 0, "files loaded": 0}

# IDX type codes and their big-endian dtypes, written here independently of the reader.
_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@pytest.fixture(autouse=True, scope="module")
def tally(print_tally):
    """Print the tally when the module ends."""
    yield
    print_tally("fuzzed loaders", TALLY)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="freenets-fuzz-") as name:
        yield Path(name)


def attempt(load, named: str):
    """Call ``load``: its result, or None after a DataError of one line that names ``named``."""
    TALLY["inputs tried"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = load()
    except DataError as error:
        message = str(error)
        assert len(message.splitlines()) == 1 and message == message.strip(), repr(message)
        assert named in message, message
        TALLY["errors reported"] += 1
        return None
    TALLY["files loaded"] += 1
    return result


# --- IDX ----------------------------------------------------------------------------------------


@st.composite
def idx_files(draw) -> bytes:
    """A well-formed small IDX file of any type code and 0 to 4 dimensions."""
    code = draw(st.sampled_from(sorted(_CODES)))
    shape = draw(st.lists(st.integers(0, 4), max_size=4))
    dtype = np.dtype(_CODES[code])
    count = int(np.prod(shape, dtype=np.int64))
    payload = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    header = struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    return header + payload


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with one kind of damage: flipped bytes, cut short, extra bytes, a changed header."""
    kind = draw(
        st.sampled_from(["none", "flip", "truncate", "append", "dimension", "code", "ndim"])
    )
    data = bytearray(data)
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data))) :]
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=40))
    elif kind == "dimension" and len(data) >= 4 and data[3]:
        offset = 4 + 4 * draw(st.integers(0, data[3] - 1))
        size = draw(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1), st.just(2**32 - 1)))
        data[offset : offset + 4] = struct.pack(">I", size)
    elif kind == "code" and len(data) >= 4:
        data[2] = draw(st.integers(0, 255))
    elif kind == "ndim" and len(data) >= 4:
        data[3] = draw(st.sampled_from([0, 1, 2, 3, 5, 33, 64, 65, 255]))
    return bytes(data)


_IDX_FILES = idx_files()


@st.composite
def damaged_idx(draw, base=_IDX_FILES) -> bytes:
    """An IDX file, damaged or not, maybe gzipped before or after the damage."""
    data = draw(base)
    packing = draw(st.sampled_from(["plain", "gzip", "gzip-then-damage"]))
    if packing == "gzip-then-damage":
        return draw(mutated(gzip.compress(data)))
    data = draw(mutated(data))
    return gzip.compress(data) if packing == "gzip" else data


def declared_shape(data: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and data size an IDX file's header declares (the file read as valid)."""
    if data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return shape, np.dtype(_CODES[data[2]]), len(data) - 4 - 4 * ndim


def check_idx(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    values = attempt(lambda: read_idx(path), str(path))
    if values is not None:
        shape, dtype, size = declared_shape(data)
        assert values.shape == shape
        assert values.dtype == dtype.newbyteorder("=")
        assert values.nbytes == size


@settings(max_examples=150)
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda tail: b"\x00\x00\x08" + tail),
        st.binary(max_size=64).map(lambda tail: b"\x1f\x8b" + tail),
    )
)
def test_idx_random_bytes(workdir, data):
    check_idx(workdir / "random-idx", data)


@settings(max_examples=300)
@given(data=damaged_idx())
def test_idx_damaged_files(workdir, data):
    check_idx(workdir / "damaged-idx", data)


@pytest.mark.parametrize("ndim", [3, 8, 32, 64, 65, 200, 255])
def test_idx_huge_declared_sizes_allocate_nothing(workdir, ndim):
    """Dimensions of 2**32 - 1 (or very many of them) are reported, not allocated."""
    header = struct.pack(">BBBB", 0, 0, 0x0E, ndim) + struct.pack(f">{ndim}I", *[2**32 - 1] * ndim)
    for tail in (b"", b"\x00" * 64):
        check_idx(workdir / "huge-idx", header + tail)
        check_idx(workdir / "huge-idx", gzip.compress(header + tail))
    ones = struct.pack(">BBBB", 0, 0, 0x08, ndim) + struct.pack(f">{ndim}I", *[1] * ndim)
    check_idx(workdir / "ones-idx", ones + b"\x07")


def _idx(array: np.ndarray, code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(_CODES[code]).tobytes()


@st.composite
def mnist_dirs(draw) -> list[bytes]:
    """The four MNIST files (8 training and 4 test images of 2x3), one of them damaged."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    files = []
    for n in (8, 4):
        files.append(_idx(rng.integers(0, 256, size=(n, 2, 3)), 0x08))
        files.append(_idx(np.arange(n) % 10, 0x08))
    victim = draw(st.integers(0, 3))
    files[victim] = draw(damaged_idx(st.just(files[victim])))
    return files


@st.composite
def odd_mnist_dirs(draw) -> list[bytes]:
    """Well-formed IDX files of any type and size, empty ones too: NaN pixels, float labels."""
    files = []
    for _ in range(2):
        n, rows, columns = (draw(st.integers(0, 3)) for _ in range(3))
        for shape in ((n, rows, columns), (n,)):
            code = draw(st.sampled_from(sorted(_CODES)))
            dtype = np.dtype(_CODES[code])
            size = int(np.prod(shape)) * dtype.itemsize
            payload = draw(st.binary(min_size=size, max_size=size))
            header = struct.pack(">BBBB", 0, 0, code, len(shape))
            files.append(header + struct.pack(f">{len(shape)}I", *shape) + payload)
    return files


@settings(max_examples=150)
@given(files=st.one_of(mnist_dirs(), odd_mnist_dirs()))
def test_mnist_folder_with_a_damaged_file(workdir, files):
    folder = workdir / "mnist"
    folder.mkdir(exist_ok=True)
    for name, data in zip(images.MNIST.files, files, strict=True):
        (folder / name).write_bytes(data)
    dataset = attempt(lambda: load_dataset("mnist", data_dir=folder), str(folder))
    if dataset is not None:
        assert dataset.x_train.ndim == 2 and dataset.x_train.shape[0] == dataset.y_train.shape[0]
        assert dataset.x_test.shape[1] == dataset.x_train.shape[1]
        for pixels in (dataset.x_train, dataset.x_test):
            assert pixels.isfinite().all() and (pixels.abs() <= 1).all()
        for labels in (dataset.y_train, dataset.y_test):
            assert ((labels >= 0) & (labels < 10)).all()


# --- .npz ---------------------------------------------------------------------------------------

_ARRAY_DTYPES = st.one_of(
    hnp.integer_dtypes(),
    hnp.unsigned_integer_dtypes(),
    hnp.floating_dtypes(),
    hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(),
    hnp.unicode_string_dtypes(max_len=3),
    hnp.byte_string_dtypes(max_len=3),
    hnp.datetime64_dtypes(),
)


def _arrays(min_dims: int, max_dims: int):
    shapes = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=6)
    plain = hnp.arrays(_ARRAY_DTYPES, shapes)
    objects = st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), max_size=5).map(
        lambda items: np.array(items + [None], dtype=object)
    )
    return st.one_of(plain, objects)


@st.composite
def npz_files(draw) -> bytes:
    """An .npz archive: X and y of random shapes and types, a key left out, maybe damaged."""
    contents = {
        "X": draw(_arrays(0, 3)),
        "y": draw(_arrays(0, 2)),
        "other": np.zeros(2),
    }
    keys = draw(st.sets(st.sampled_from(["X", "y", "other"]), min_size=0, max_size=3))
    keys = keys or {"X", "y"}
    if "X" in keys and draw(st.booleans()):
        keys = (keys - {"X"}) | {"x"}
        contents["x"] = contents["X"]
    stream = io.BytesIO()
    save = draw(st.sampled_from([np.savez, np.savez_compressed]))
    save(stream, **{key: contents[key] for key in keys})
    return draw(mutated(stream.getvalue())) if draw(st.booleans()) else stream.getvalue()


@st.composite
def matching_npz_files(draw) -> bytes:
    """Loadable-looking archives: numeric X (n, ...) with NaN, inf, empty parts; y (n,)."""
    n = draw(st.integers(0, 12))
    features = draw(st.lists(st.integers(0, 3), min_size=1, max_size=2))
    dtype = draw(st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), st.just(np.uint8)))
    x = draw(hnp.arrays(dtype, (n, *features)))
    y = draw(
        hnp.arrays(
            st.sampled_from(["i8", "f8", "U3", "S2", "b1", "u1"]),
            n,
            elements=None,
        )
    )
    stream = io.BytesIO()
    np.savez(stream, X=x, y=y)
    return stream.getvalue()


def check_table(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    arrays = attempt(lambda: load_table(path), str(path))
    if arrays is not None:
        x_train, y_train, x_test, y_test = arrays
        assert x_train.ndim == 2 and x_train.shape[1] == x_test.shape[1] >= 1
        assert x_train.shape[0] == y_train.shape[0] >= 1 and x_test.shape[0] == y_test.shape[0]
        assert x_train.dtype == x_test.dtype == np.float32
        assert np.isfinite(x_train).all() and np.isfinite(x_test).all()
        assert y_train.dtype == y_test.dtype == np.int64 and y_train.min() >= 0


@settings(max_examples=100)
@given(
    data=st.one_of(
        st.binary(max_size=80),
        st.binary(max_size=80).map(lambda tail: b"PK\x03\x04" + tail),
        st.binary(max_size=80).map(lambda tail: b"\x93NUMPY" + tail),
        st.binary(max_size=80).map(lambda tail: b"\x80\x04" + tail),
    )
)
def test_npz_random_bytes(workdir, data):
    check_table(workdir / "random.npz", data)


@settings(max_examples=200)
@given(data=npz_files())
def test_npz_random_arrays_and_damage(workdir, data):
    check_table(workdir / "arrays.npz", data)


@settings(max_examples=100)
@given(data=matching_npz_files())
def test_npz_matching_arrays(workdir, data):
    check_table(workdir / "matching.npz", data)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("shape", [(2**40,), (2**31, 2**31), (2**62, 4), (3, 2**60)])
def test_npz_huge_declared_shape_allocates_nothing(workdir, compression, shape):
    """An .npy member whose header declares terabytes but holds a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", compression) as archive:
        archive.writestr("X.npy", header.getvalue() + b"\x00" * 16)
        archive.writestr("y.npy", header.getvalue() + b"\x00" * 16)
    check_table(workdir / "huge.npz", stream.getvalue())


def test_npz_corrupt_deflate_stream(workdir):
    stream = io.BytesIO()
    np.savez_compressed(stream, X=np.arange(600.0).reshape(200, 3), y=np.arange(200) % 2)
    data = bytearray(stream.getvalue())
    start = data.index(b"X.npy") + len(b"X.npy")  # just past the member's local header
    data[start + 10 : start + 40] = bytes(30)
    check_table(workdir / "deflate.npz", bytes(data))


# --- .csv ---------------------------------------------------------------------------------------

_CELLS = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "9" * 30, "1_0", "0x1", "label"]),
    st.text(max_size=4),
)


@st.composite
def csv_texts(draw) -> str:
    """A CSV file: a header naming (or not) the label column, ragged rows of odd cells."""
    columns = draw(st.integers(1, 4))
    header = draw(st.lists(st.sampled_from(["label", "a", "b", " label ", ""]), min_size=columns))
    header = header[:columns]
    if draw(st.booleans()):
        header[draw(st.integers(0, len(header) - 1))] = "label"
    rows = [header]
    for _ in range(draw(st.integers(0, 10))):
        width = columns if draw(st.integers(0, 5)) else draw(st.integers(0, 6))
        rows.append(draw(st.lists(_CELLS, min_size=width, max_size=width)))
    lines = []
    for row in rows:
        quoted = [
            '"' + cell.replace('"', '""') + '"' if draw(st.booleans()) else cell for cell in row
        ]
        lines.append(",".join(quoted))
    return draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)


@st.composite
def numeric_csv_texts(draw) -> str:
    """Well-formed numeric CSV files of a few classes: some load, some are too small to split."""
    n = draw(st.integers(1, 20))
    features = draw(st.integers(0, 3))
    lines = [",".join(["label", *(f"f{i}" for i in range(features))])]
    for _ in range(n):
        label = draw(st.sampled_from(["0", "1", "2", "cat", "dog", "1.5"]))
        values = draw(st.lists(st.floats(-1e6, 1e6), min_size=features, max_size=features))
        lines.append(",".join([label, *map(repr, values)]))
    return "\n".join(lines)


@settings(max_examples=150)
@given(
    data=st.one_of(
        st.binary(max_size=80),
        st.text(max_size=80).map(str.encode),
        st.text(alphabet=st.sampled_from(',"\n\r\x00 label01.'), max_size=80).map(str.encode),
    )
)
def test_csv_random_bytes_and_text(workdir, data):
    check_table(workdir / "random.csv", data)


@settings(max_examples=200)
@given(text=csv_texts(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
def test_csv_odd_rows_and_cells(workdir, text, encoding):
    check_table(workdir / "odd.csv", text.encode(encoding, errors="replace"))


@settings(max_examples=60)
@given(text=numeric_csv_texts())
def test_csv_numeric_files(workdir, text):
    check_table(workdir / "numeric.csv", text.encode())


# --- the command line ---------------------------------------------------------------------------


def _cli_train(run_cli, tmp_path: Path, dataset: str, *extra: str):
    out = tmp_path / "run"
    args = ["train", "--dataset", dataset, "--neurons", "4", "--epochs", "1", "--out", str(out)]
    result = run_cli([*args, "--quiet", *extra])
    assert not (out / "summary.json").exists()
    return result


def _bad_files(tmp_path: Path) -> list[tuple[str, tuple[str, ...]]]:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}
    )
    huge = io.BytesIO()
    with zipfile.ZipFile(huge, "w") as archive:
        archive.writestr("X.npy", header.getvalue())
        archive.writestr("y.npy", header.getvalue())
    objects = io.BytesIO()
    np.savez(objects, X=np.array([[1, None]], dtype=object), y=np.array([0]))
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    rng = np.random.default_rng(0)
    contents = [
        _idx(rng.integers(0, 256, size=(8, 2, 3)), 0x08),
        _idx(np.arange(7) % 10, 0x08),  # one label short
        _idx(rng.integers(0, 256, size=(4, 2, 3)), 0x08),
        gzip.compress(_idx(np.arange(4), 0x08))[:-6],  # a cut-off download
    ]
    for name, data in zip(images.MNIST.files, contents, strict=True):
        (mnist / name).write_bytes(data)
    files = {
        "huge.npz": huge.getvalue(),
        "objects.npz": objects.getvalue(),
        "junk.npz": b"PK\x03\x04" + bytes(range(60)),
        "text.csv": b"label,a\n0,x\n1,\x00\n",
        "ragged.csv": b'label,"a\nb"\n0\n1,2,3\n',
        "latin.csv": "label,\xe9\n0,1\n".encode("latin-1"),
        "empty.csv": b"",
    }
    cases = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        cases.append((str(tmp_path / name), ()))
    cases.append(("mnist", ("--data-dir", str(mnist))))
    return cases


def test_cli_reports_bad_files_in_one_line(tmp_path, run_cli):
    for dataset, extra in _bad_files(tmp_path):
        TALLY["inputs tried"] += 1
        result = _cli_train(run_cli, tmp_path, dataset, *extra)
        assert result.code in (1, 2), (dataset, result)
        assert result.one_error_line("freenets: error: "), (dataset, result.err)
        TALLY["errors reported"] += 1


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=60), suffix=st.sampled_from([".npz", ".csv"]))
def test_cli_random_files(workdir, run_cli, data, suffix):
    path = workdir / f"cli{suffix}"
    path.write_bytes(data)
    TALLY["inputs tried"] += 1
    result = _cli_train(run_cli, workdir, str(path))
    assert result.code in (1, 2) and result.one_error_line(str(path)), result.err
    TALLY["errors reported"] += 1
