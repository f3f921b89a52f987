"""A run directory: config.json, history.json, summary.json and the trained models.

``config.json`` is written first; ``summary.json`` is written last, so a directory without it holds
no results. Every file is written atomically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from freenets import __version__, io
from freenets.data import Dataset
from freenets.model import FreeNet
from freenets.train import ModelResult, TrainConfig, run_pair


def default_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    """``runs/<time>-<dataset>-k<neurons>``, unique to the second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{config.dataset}-k{config.n_neurons}"


def summarise(config: TrainConfig, freeevolve: ModelResult, fcnn: ModelResult) -> dict[str, Any]:
    """The run's summary, as printed by ``freenets train --json``."""
    return {
        "dataset": config.dataset,
        "neurons": config.n_neurons,
        "epsilon": config.epsilon,
        "seed": config.seed,
        "epochs": config.epochs,
        "freeevolve": {**freeevolve.summary(), **_flops(freeevolve.model)},
        "fcnn": fcnn.summary(),
    }


def _flops(model: FreeNet) -> dict[str, int]:
    """FLOPs per sample of the learned graph and of the dense initial one."""
    return {"flops": model.flops(), "flops_dense": model.flops(dense=True)}


class _Bars:
    """One tqdm bar per model over its epochs, on stderr."""

    def __init__(self, epochs: int, enabled: bool) -> None:
        self.epochs = epochs
        self.enabled = enabled
        self.bars: dict[str, tqdm] = {}

    def __call__(self, name: str, epoch: int, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = tqdm(total=self.epochs, desc=f"{name:>10}", unit="epoch")
        bar.update(1)
        bar.set_postfix(
            {
                key: (f"{value:.4f}" if isinstance(value, float) else value)
                for key, value in info.items()
            },
            refresh=False,
        )
        if epoch == self.epochs:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def save_model(path: str | Path, model: FreeNet) -> None:
    """Save a FreeNet's sizes and state (weights and mask); load with :func:`load_model`."""
    io.torch_save(
        path,
        {
            "in_features": model.in_features,
            "n_neurons": model.n_neurons,
            "out_features": model.out_features,
            "state_dict": model.state_dict(),
        },
    )


def load_model(path: str | Path) -> FreeNet:
    """Load a FreeNet saved by :func:`save_model` (``torch.load`` with ``weights_only=True``)."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = FreeNet(saved["in_features"], saved["n_neurons"], saved["out_features"])
    model.load_state_dict(saved["state_dict"])
    return model


def train_run(
    config: TrainConfig, dataset: Dataset, out: str | Path, *, show_progress: bool = True
) -> dict[str, Any]:
    """Train FreeEvolve and its FCNN, write the run directory ``out``, return the summary."""
    config.validate()
    out = Path(out)
    io.write_json(out / "config.json", {"freenets": __version__, **config.to_dict()})
    bars = _Bars(config.epochs, show_progress)
    try:
        freeevolve, fcnn = run_pair(dataset, config, progress=bars)
    finally:
        bars.close()
    io.write_json(
        out / "history.json", {"freeevolve": freeevolve.history(), "fcnn": fcnn.history()}
    )
    save_model(out / "freeevolve.pt", freeevolve.model)
    io.torch_save(out / "fcnn.pt", fcnn.model.state_dict())
    summary = summarise(config, freeevolve, fcnn)
    io.write_json(out / "summary.json", summary)
    return summary
