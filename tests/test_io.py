"""Atomic writes: complete or absent, with ordinary file modes; the directory lock."""

import os
import stat
import subprocess
import sys

import pytest

from freenets import atomic
from freenets.errors import Busy


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

    with pytest.raises(OSError, match="disk full") as caught:  # the writer's error, and the file
        atomic._atomic(path, explode)
    assert caught.value.filename == str(path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_exclusive_refuses_a_second_holder_names_the_first_and_leaves_no_file(tmp_path):
    assert atomic.lock_holder(tmp_path) is None
    with atomic.exclusive(tmp_path):
        # A second open of the directory is a second lock, as in another process.
        with pytest.raises(Busy, match=str(tmp_path)):
            with atomic.exclusive(tmp_path):
                pass
        if sys.platform.startswith("linux"):
            assert atomic.lock_holder(tmp_path) == os.getpid()
        assert list(tmp_path.iterdir()) == []
    assert atomic.lock_holder(tmp_path) is None
    with atomic.exclusive(tmp_path):  # released on exit: it can be taken again
        pass


def test_a_second_process_is_refused_the_lock(tmp_path):
    script = (
        "import sys\nfrom freenets import atomic\nfrom freenets.errors import Busy\n"
        "try:\n    with atomic.exclusive(sys.argv[1]):\n        print('locked')\n"
        "except Busy:\n    print('busy', atomic.lock_holder(sys.argv[1]))\n"
    )
    with atomic.exclusive(tmp_path):
        held = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
        )
    free = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    holder = str(os.getpid()) if sys.platform.startswith("linux") else "None"
    assert held.stdout == f"busy {holder}\n", held.stderr
    assert free.stdout == "locked\n", free.stderr
