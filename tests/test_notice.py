"""The one line said on a terminal while the kernels compile (the first run on a machine)."""

from __future__ import annotations

import io
import time

import pytest

from freenets.kernels import notice


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(notice, "_said", notice.threading.Event())
    monkeypatch.setattr(notice, "DELAY_SECONDS", 0.05)


def test_a_slow_first_call_is_announced_once_on_a_terminal(fresh, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(notice.sys, "stderr", terminal)
    with notice.compiling():
        time.sleep(0.3)
    with notice.compiling():
        time.sleep(0.3)
    assert terminal.getvalue() == notice.MESSAGE + "\n"


def test_a_quick_call_or_a_pipe_hears_nothing(fresh, monkeypatch):
    terminal, pipe = Terminal(), io.StringIO()
    monkeypatch.setattr(notice.sys, "stderr", terminal)
    with notice.compiling():
        pass
    time.sleep(0.15)
    assert terminal.getvalue() == ""
    monkeypatch.setattr(notice.sys, "stderr", pipe)
    with notice.compiling():
        time.sleep(0.3)
    assert pipe.getvalue() == ""


def test_first_use_is_true_once_per_key():
    key = ("test", object())
    assert notice.first_use(key) and not notice.first_use(key)
