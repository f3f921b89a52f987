"""Ctrl-C as a request to stop training after the current batch, so that a checkpoint is saved.

Used by ``freenets train`` around :func:`freenets.runs.train_run`: the loop of Algorithm 1 asks
``should_stop`` after every batch, saves its state and raises ``Interrupted``.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopOnInterrupt:
    """Within ``with``, the first Ctrl-C (SIGINT) asks training to stop after the current batch.

    Calling the object says whether a stop was asked for; pass it as ``should_stop``. A second
    Ctrl-C raises :class:`KeyboardInterrupt` at once. The previous handler is restored on exit.
    Python installs signal handlers only in the main thread; elsewhere this does nothing.

    Parameters
    ----------
    message : str, optional
        Printed on stderr at the first Ctrl-C.
    """

    def __init__(self, message: str | None = None) -> None:
        self.message = message
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopOnInterrupt:
        # Only the main thread may set handlers; an ignored SIGINT (nohup, ``&``) stays ignored.
        self._installed = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        )
        if self._installed:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.message:
            print(f"\n{self.message}", file=sys.stderr, flush=True)
