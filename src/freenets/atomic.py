"""Atomic file writes (a result file is absent or complete, never half-written), and the one lock
that keeps two processes out of one run or sweep directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from freenets.errors import Busy


@contextmanager
def exclusive(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` itself, or raise :class:`Busy` at once.

    Run directories (:func:`freenets.experiments.runs.train_run`) and sweep directories
    (:func:`freenets.experiments.sweep.run_sweep`) are both locked this way. The lock is on the
    directory's own file descriptor, so it leaves no file behind, and the kernel releases it when
    the process ends, however it ends; :func:`lock_holder` names the process that holds it.
    Where ``fcntl`` does not exist (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(str(directory)) from None
        except OSError:  # a file system without locks (some network mounts): go on unlocked
            pass
        yield
    finally:
        os.close(handle)


def lock_holder(directory: str | Path) -> int | None:
    """The process id holding :func:`exclusive` on ``directory``; None if unknown or unlocked.

    Read from Linux's ``/proc/locks`` (the ``flock`` entry on the directory's device and inode);
    elsewhere the holder is unknown.
    """
    try:
        status = os.stat(directory)
        with open("/proc/locks", encoding="ascii") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return None
    where = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2155003 0 EOF"; waiters read "1: -> FLOCK ...".
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where:
            return int(fields[4]) if fields[4].isdigit() and fields[4] != "0" else None
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The writer's return value (a byte count, for stream.write) is ignored.
def _atomic(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode an ordinary write would.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is None:  # a failed write or fsync names no file; say which result
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    _atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    _atomic(path, lambda stream: stream.write(data))


def write_stream(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Atomically write what ``write`` writes to the stream it gets; if it raises, no file."""
    _atomic(path, write)


def write_json(path: str | Path, value: Any) -> None:
    """Atomically write ``value`` as indented JSON."""
    write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def torch_save(path: str | Path, value: Any) -> None:
    """Atomically ``torch.save`` ``value``; load it back with ``torch.load(weights_only=True)``."""
    import io as _io

    import torch

    # Serialise in memory first: torch.save reports a full disk as an obscure RuntimeError,
    # whereas a plain write raises OSError (ENOSPC) like every other result file.
    buffer = _io.BytesIO()
    torch.save(value, buffer)
    write_bytes(path, buffer.getvalue())
