"""Shared test settings: hypothesis profiles with fixed seeds and no deadlines (2-core CI), and
the tallies the fault and fuzz modules print when they end."""

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


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
