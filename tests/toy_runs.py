"""A small synthetic dataset and helpers shared by the checkpoint and reliability tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from freenets.data import Dataset
from freenets.experiments.runs import load_model
from freenets.training.config import TrainConfig

# Small enough for a run in about a second; FreeEvolve still changes the graph in several rounds.
TOY_CONFIG = TrainConfig.of(
    dataset="toy", n_neurons=8, epochs=6, batch_size=32, learning_rate=0.02, patience=2, seed=3
)


def toy_dataset(n_train: int = 240, n_test: int = 90, seed: int = 0) -> Dataset:
    """Three noisy clusters in [0, 1]^6."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.rand(3, 6, generator=generator)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 3, (n,), generator=generator)
        x = centers[y] + 0.35 * torch.randn(n, 6, generator=generator)
        return x.clamp(0, 1), y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return Dataset("toy", x_train, y_train, x_test, y_test, n_classes=3)


class StopAfter:
    """A ``should_stop`` that asks to stop at its ``calls``-th call."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked >= self.calls


def without_seconds(value: Any) -> Any:
    """``value`` with every wall-clock entry removed: timings differ between runs."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def run_results(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's numbers (timings aside) and its two models' tensors."""
    run_dir = Path(run_dir)
    rule = json.loads((run_dir / "config.json").read_text()).get("rule", "freeevolve")
    return {
        "summary": without_seconds(json.loads((run_dir / "summary.json").read_text())),
        "history": without_seconds(json.loads((run_dir / "history.json").read_text())),
        "freenet": load_model(run_dir / f"{rule}.pt").state_dict(),
        "fcnn": torch.load(run_dir / "fcnn.pt", weights_only=True),
    }


def assert_same_results(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal numbers, and tensors equal bit for bit."""
    assert a["summary"] == b["summary"]
    assert a["history"] == b["history"]
    for model in ("freenet", "fcnn"):
        assert a[model].keys() == b[model].keys()
        for key in a[model]:
            assert torch.equal(a[model][key], b[model][key]), (model, key)
