"""Ctrl-C (or SIGTERM) as a request to stop training after the current batch, so that a
checkpoint is saved. SIGTERM is what ``kill`` and batch schedulers send before they kill a job.

Used by ``freenets train`` around :func:`freenets.experiments.runs.train_run`: the loop of Algorithm 1 asks
``should_stop`` after every batch, saves its state and raises ``Interrupted``.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopOnInterrupt:
    """Within ``with``, the first SIGINT (Ctrl-C) or SIGTERM asks training to stop after the
    current batch; :attr:`signal` records which one came.

    Calling the object says whether a stop was asked for; pass it as ``should_stop``. A second
    signal raises :class:`KeyboardInterrupt` at once. The previous handlers are restored on exit.
    Python installs signal handlers only in the main thread; elsewhere this does nothing.

    Parameters
    ----------
    message : str, optional
        Printed on stderr at the first Ctrl-C.
    """

    def __init__(self, message: str | None = None) -> None:
        self.message = message
        self.requested = False
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopOnInterrupt:
        # Only the main thread may set handlers; an ignored signal (SIGINT under nohup or ``&``)
        # stays ignored.
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signum
        if self.message:
            print(f"\n{self.message}", file=sys.stderr, flush=True)
