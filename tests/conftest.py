"""Shared test settings and fixtures.

- hypothesis profiles with fixed seeds and no deadlines (2-core CI);
- ``one_torch_thread``: one torch thread for a module (``pytestmark =
  pytest.mark.usefixtures("one_torch_thread")``), the count restored after it;
- ``random_mask``: a builder of random valid graphs, ``random_mask(k, density, seed)``;
- ``run_cli``: ``freenets`` run in this process, its exit status, stdout and stderr, and
  ``one_error_line``: whether stderr is the one clear line every user error must be;
- ``tiny_digits``: a few hundred digits, for real runs that take a second;
- ``print_tally``: the tallies the fault and fuzz modules print when they end.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread while the module runs: small batches run fastest so on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_mask(
    k: int, density: float = 0.5, generator: torch.Generator | int = 0
) -> torch.Tensor:
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    keep = torch.rand(k, k, generator=generator) < density
    return keep & torch.tril(torch.ones(k, k, dtype=torch.bool), diagonal=-1)


@pytest.fixture(scope="session")
def random_mask() -> Callable[..., torch.Tensor]:
    """``random_mask(k, density=0.5, generator=0)``: a ``(k, k)`` bool DAG mask.

    Each allowed edge ``i -> j`` (``i < j``, stored at ``[j, i]``) is present with probability
    ``density``; ``generator`` is a ``torch.Generator`` or a seed.
    """
    return _random_mask


def _one_error_line(text: str, *fragments: str) -> bool:
    lines = text.strip().splitlines()
    return (
        len(lines) == 1
        and lines[0].startswith("freenets: ")
        and "Traceback" not in text
        and all(fragment in lines[0] for fragment in fragments)
    )


@pytest.fixture(scope="session")
def one_error_line() -> Callable[..., bool]:
    """``one_error_line(stderr, *fragments)``: one ``freenets: ...`` line holding each fragment."""
    return _one_error_line


@pytest.fixture(scope="session")
def tiny_digits():
    """The first 400 training and 120 test digits: a real run in about a second."""
    from freenets.data import Dataset, load_digits

    digits = load_digits()
    x_train, y_train = digits.x_train[:400], digits.y_train[:400]
    return Dataset("digits", x_train, y_train, digits.x_test[:120], digits.y_test[:120], 10)


class CliRun(NamedTuple):
    """What one ``freenets`` command did: exit status, stdout and stderr."""

    code: int
    out: str
    err: str

    def one_error_line(self, *fragments: str) -> bool:
        """Whether stderr is one ``freenets: ...`` line, no traceback, holding every fragment."""
        return _one_error_line(self.err, *fragments)


def _run_cli(argv: Sequence[str]) -> CliRun:
    from freenets import cli

    # stdout is strict UTF-8, as a terminal's: printing what it cannot encode fails the test.
    out_bytes = io.BytesIO()
    stdout = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict")
    stderr = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:  # --help and --version
            code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
        stdout.flush()
    return CliRun(code, out_bytes.getvalue().decode("utf-8"), stderr.getvalue())


@pytest.fixture(scope="session")
def run_cli() -> Callable[[Sequence[str]], CliRun]:
    """``run_cli(argv)``: ``freenets argv`` in this process, as a :class:`CliRun`."""
    return _run_cli


@pytest.fixture(scope="session")
def print_tally(request) -> Callable[[str, dict[str, int]], None]:
    """``print_tally(label, counts)`` writes ``label: N name, ...`` to the terminal, uncaptured."""

    def write(label: str, counts: dict[str, int]) -> None:
        line = f"{label}: " + ", ".join(f"{count} {name}" for name, count in counts.items())
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line("")
                reporter.write_line(line)

    return write
