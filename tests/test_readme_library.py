"""Every Python example in the README's ``## Library`` section runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def library_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_library_section_has_examples():
    assert len(library_blocks()) >= 4


@pytest.mark.parametrize("index", range(len(library_blocks())))
def test_readme_library_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is fastest on a shared machine
    try:
        exec(compile(library_blocks()[index], f"README.md Library block {index}", "exec"), {})
    finally:
        torch.set_num_threads(threads)
