"""The version is written once (``freenets.__version__``), and the installed metadata and
``freenets --version`` agree with it."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import freenets

ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_prints_the_installed_version(run_cli):
    installed = importlib.metadata.version("freenets")
    # A mismatch here means the installed metadata is stale: reinstall (pip install -e .).
    assert run_cli(["--version"]) == (0, f"freenets {installed}\n", "")
    assert installed == freenets.__version__


def test_the_version_is_written_in_one_place():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\n(.*?)^\[", pyproject, flags=re.MULTILINE | re.DOTALL)
    assert project is not None
    assert re.search(r"^version\s*=", project.group(1), flags=re.MULTILINE) is None
    assert re.search(r'^dynamic = \["version"\]', project.group(1), flags=re.MULTILINE)
    assert 'version = {attr = "freenets.__version__"}' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc|\.dev)\d+)?", freenets.__version__)


def test_the_changelog_has_an_unreleased_section():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert "keepachangelog.com" in changelog
