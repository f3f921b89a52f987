"""FreeEvolve under PyTorch Lightning: the Trainer trains the weights, a callback the graph.

Algorithm 1 of the paper in a Lightning ``Trainer``: a plain ``LightningModule`` holds a
:class:`freenets.FreeNet`, and :class:`freenets.lightning.FreeEvolveCallback` takes one FreeEvolve
step (Algorithm 2) at the end of every training epoch but the last, until the graph has not changed for
``--patience`` epochs. The test accuracy reported is the one after the last epoch.

    python examples/lightning_digits.py                                    # digits, offline
    python examples/lightning_digits.py --dataset fashion-mnist --limit 12000 --neurons 64

scikit-learn's 8x8 digits need no download; any dataset of ``freenets.data`` works. Needs
``pip install 'freenets[lightning]'``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import lightning.pytorch as pl
import torch
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from freenets import FreeNet
from freenets.data import load_dataset, validation_split
from freenets.errors import DataError
from freenets.lightning import FreeEvolveCallback


class Classifier(pl.LightningModule):
    """A FreeNet trained with Adam on the cross-entropy; nothing in it knows about FreeEvolve."""

    def __init__(self, net: FreeNet, learning_rate: float) -> None:
        super().__init__()
        self.net = net
        self.learning_rate = learning_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        loss = functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_accuracy", (self(x).argmax(dim=1) == y).float().mean())

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test_accuracy", (self(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # No weight decay on the graph's weights: it would move pruned edges (the callback refuses).
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


class EpochLine(pl.Callback):
    """One line per epoch, printed after the epoch's FreeEvolve round (so listed after it)."""

    def __init__(self, evolve: FreeEvolveCallback) -> None:
        self.evolve = evolve

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        print(
            f"epoch {trainer.current_epoch + 1:3d}  loss {float(metrics['train_loss']):.4f}  "
            f"val {float(metrics['val_accuracy']):.4f}  edges {int(metrics['edges']):5d}  "
            f"pruned {int(metrics['pruned']):4d}  added {int(metrics['added']):4d}  "
            f"converged {self.evolve.converged}",
            flush=True,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--neurons", type=int, default=24)
    parser.add_argument("--epsilon", type=float, default=0.25)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--limit", type=int, default=None, help="use the first N training samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default=None, help="write a CSV log of the metrics here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, print one line per epoch, and return the results."""
    args = parse_args(argv)
    try:
        dataset = load_dataset(args.dataset, args.data_dir)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    split = validation_split(
        dataset.x_train[: args.limit], dataset.y_train[: args.limit], 0.1, args.seed
    )
    shuffle = torch.Generator().manual_seed(args.seed + 1)
    train = DataLoader(
        TensorDataset(split.x_train, split.y_train),
        batch_size=args.batch_size,
        shuffle=True,
        generator=shuffle,  # the order of batches from the seed, not the global random state
    )
    val = DataLoader(TensorDataset(split.x_val, split.y_val), batch_size=1000)
    test = DataLoader(TensorDataset(dataset.x_test, dataset.y_test), batch_size=1000)

    net = FreeNet(
        dataset.n_features,
        args.neurons,
        dataset.n_classes,
        generator=torch.Generator().manual_seed(args.seed),
    )
    # The statistics pass reads the training inputs (one tensor; a DataLoader works too).
    evolve = FreeEvolveCallback(split.x_train, epsilon=args.epsilon, patience=args.patience)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner lines
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[evolve, EpochLine(evolve)],
        logger=pl.loggers.CSVLogger(args.log_dir, name="freeevolve") if args.log_dir else False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    module = Classifier(net, args.learning_rate)
    trainer.fit(module, train, val)
    val_accuracy = float(trainer.callback_metrics["val_accuracy"])  # test() resets the metrics
    [scores] = trainer.test(module, test, verbose=False)
    print(
        f"after {args.epochs} epochs: val {val_accuracy:.4f}, "
        f"test {scores['test_accuracy']:.4f}, {net.n_edges} edges of "
        f"{args.neurons * (args.neurons - 1) // 2}, converged {evolve.converged}"
    )
    return {
        "val_accuracy": val_accuracy,
        "test_accuracy": scores["test_accuracy"],
        "edges": net.n_edges,
        "converged": evolve.converged,
        "history": evolve.history,
        "model": net,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
