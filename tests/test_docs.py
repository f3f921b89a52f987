"""The documentation stays true to the code: its examples run, its pages are all in the site, the
API reference covers every module, the command-line page every option, and the README stays short.

A ```` ```python ```` block in ``README.md`` or ``docs/**/*.md`` runs as written, in a temporary
directory. A block that cannot run offline (it needs MNIST, say) is marked by an HTML comment on
the line right above it, with the reason: ``<!-- no-test: needs the MNIST files -->``.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import freenets

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(DOCS.rglob("*.md"))

# An optional one-line "no-test" comment, then a python block. [^\n] keeps a comment from
# reaching past its own line to mark a later block.
BLOCK = re.compile(
    r"(?:<!--\s*no-test:(?P<reason>[^\n]*?)-->[ \t]*\n)?^```python\n(?P<code>.*?)^```",
    flags=re.DOTALL | re.MULTILINE,
)


def python_blocks() -> list:
    blocks = []
    for path in [README, *PAGES]:
        text = path.read_text(encoding="utf-8")
        for index, match in enumerate(BLOCK.finditer(text)):
            name = f"{path.relative_to(ROOT)}:{index}"
            reason = match["reason"]
            marks = [pytest.mark.skip(reason=reason.strip())] if reason is not None else []
            blocks.append(pytest.param(name, match["code"], id=name, marks=marks))
    return blocks


def test_the_docs_have_examples():
    names = [block.values[0] for block in python_blocks()]
    assert sum(name.startswith("docs/library.md") for name in names) >= 5


def test_every_no_test_marker_sits_above_a_python_block_and_says_why():
    for path in [README, *PAGES]:
        text = path.read_text(encoding="utf-8")
        markers = re.findall(r"<!--\s*no-test:([^\n]*?)-->", text)
        marked = [m["reason"] for m in BLOCK.finditer(text) if m["reason"] is not None]
        assert len(marked) == len(markers), f"{path}: a no-test comment not right above ```python"
        assert all(reason.strip() for reason in marked), f"{path}: a no-test comment without why"


@pytest.mark.usefixtures("one_torch_thread")  # small batches: one thread is fastest
@pytest.mark.parametrize(("name", "code"), python_blocks())
def test_example_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})


def nav_pages() -> list[str]:
    """The pages named in mkdocs.yml's nav (read without a YAML parser, which is not a test need)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)$", nav, flags=re.MULTILINE)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    pages = [path.relative_to(DOCS).as_posix() for path in PAGES]
    assert sorted(nav_pages()) == sorted(pages)


def test_the_api_reference_covers_every_module():
    text = "\n".join(path.read_text(encoding="utf-8") for path in (DOCS / "api").glob("*.md"))
    documented = set(re.findall(r"^::: (\S+)$", text, flags=re.MULTILINE))
    # A subpackage's directive documents its modules (show_submodules in mkdocs.yml), so a new
    # module inside a subpackage needs no line here; a new top-level module does.
    assert "show_submodules: true" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    modules = {f"freenets.{info.name}" for info in pkgutil.iter_modules(freenets.__path__)}
    assert modules - documented == set(), "add a '::: module' line to a page of docs/api/"
    assert documented - modules - {"freenets"} == set(), "docs/api/ names a module that is gone"


def test_the_architecture_page_shows_the_layers_of_the_import_contract():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    contract = re.search(r'type = "layers"\nlayers = \[\n(.*?)\n\]', pyproject, flags=re.DOTALL)
    layers = re.findall(r'"([^"]+)"', contract.group(1))
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"^## Layers\n.*?^```\n(.*?)^```", page, flags=re.DOTALL | re.MULTILINE)
    assert block.group(1).splitlines() == layers


def help_text(run_cli, *argv: str) -> str:
    result = run_cli([*argv, "--help"])
    assert result.code == 0 and result.err == "", result.err
    return result.out


def options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


def test_the_cli_page_documents_every_command_and_option(run_cli):
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `freenets (\w+)`\n(.*?)(?=^## |\Z)", page, re.M | re.S))
    commands = re.search(r"\{([\w,-]+)\}", help_text(run_cli)).group(1).split(",")
    assert sorted(sections) == sorted(commands)
    for command in commands:
        cli = options(help_text(run_cli, command)) - {"--help"}
        written = options(sections[command])
        assert cli - written == set(), f"docs/cli.md: freenets {command} lacks these options"
        assert written - cli == set(), f"docs/cli.md: freenets {command} has no such options"


def test_the_readme_is_short_and_keeps_the_test_command():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    # .ci/run runs the line after this marker, inside a bash block.
    command = re.search(r"<!-- test-command[^\n]*-->\n```bash\n([^\n]+)\n```", text)
    assert command is not None
    assert command.group(1) == "pip install -c constraints.txt -e '.[test]' && pytest"


def test_the_readme_links_and_images_exist():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [target for target in targets if "://" not in target]
    assert local, "the README links into the docs"
    assert [target for target in local if not (ROOT / target).exists()] == []


def test_the_docs_images_stay_small():
    images = [p for p in DOCS.rglob("*") if p.suffix.lower() in {".png", ".gif", ".svg", ".jpg"}]
    assert images
    assert sum(p.stat().st_size for p in images) < 1024 * 1024


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: no broken link, image or API reference (the ``docs`` extra)."""
    needed = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
    if not all(importlib.util.find_spec(name) for name in needed):
        if os.environ.get("CI"):  # in CI a missing extra fails, as the other slow tests do
            pytest.fail("the docs extra is not installed: pip install -e '.[docs]'")
        pytest.skip("the docs extra is not installed")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    for page in ("index.html", "api/core/index.html", "cli/index.html"):
        assert (tmp_path / page).is_file()
