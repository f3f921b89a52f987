"""One line on a terminal while the kernels compile for this machine, the first time only.

numba compiles the kernels on first use and keeps the machine code on disk (``cache=True``), so
only a machine's first run pays for it, about 15 s on 2 cores for the default run, during
which nothing else would be printed. :func:`compiling` wraps a call that may compile (the first
one of each kernel, :func:`first_use`): if it is still running after a moment, one line says
what is happening. It speaks only to a terminal (not to a pipe,
a file or a test's capture) and at most once per process.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# A call that takes longer than this on its first use is compiling, not computing.
DELAY_SECONDS = 1.5
MESSAGE = (
    "freenets: compiling the graph kernels for this machine; only the first run does this "
    "(under a minute on 2 cores), later runs reuse them"
)

_said = threading.Event()


def _say() -> None:
    if not _said.is_set():
        _said.set()
        print(MESSAGE, file=sys.stderr, flush=True)


@contextmanager
def compiling() -> Iterator[None]:
    """Say :data:`MESSAGE` on stderr if the body runs longer than :data:`DELAY_SECONDS`."""
    if _said.is_set() or not sys.stderr.isatty():
        yield
        return
    timer = threading.Timer(DELAY_SECONDS, _say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# What has been called once in this process (after which it is compiled).
_used: set[object] = set()


def first_use(key: object) -> bool:
    """True the first time ``key`` is asked about in this process (then wrap the call)."""
    if key in _used:
        return False
    _used.add(key)
    return True
