"""Atomic writes: complete or absent, with ordinary file modes."""

import os
import stat

import pytest

from freenets import atomic


def test_write_json_and_mode(tmp_path):
    path = tmp_path / "a" / "b.json"
    atomic.write_json(path, {"x": 1})
    assert path.read_text() == '{\n  "x": 1\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.txt"
    atomic.write_text(path, "old")

    def explode(stream):
        stream.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic._atomic(path, explode)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]
