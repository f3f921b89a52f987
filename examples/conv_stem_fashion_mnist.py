"""A convolutional stem feeding a FreeNet's neurons, trained with FreeEvolve on Fashion-MNIST.

The paper's conclusion (section 6) notes that FreeNets can take convolutional cells. Here a small
convolutional stem is the FreeNet's ``encoder``: every neuron reads learned image features, and
FreeEvolve (Algorithm 1, through :class:`freenets.Evolver`) learns the graph among the neurons in an
ordinary PyTorch training loop. The test accuracy reported is the one at the epoch with the best
validation accuracy (validation held out from the training data).

    python examples/conv_stem_fashion_mnist.py                        # Fashion-MNIST
    python examples/conv_stem_fashion_mnist.py --dataset digits --epochs 5

Fashion-MNIST is read by ``freenets.data.load_dataset("fashion-mnist")`` (on Debian, the package
dataset-fashion-mnist); any square grey-scale dataset of freenets.data works.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from typing import Any

import torch
from torch import nn

from freenets import Evolver, FreeNet
from freenets.data import load_dataset, validation_split
from freenets.errors import DataError


def conv_stem(side: int, n_neurons: int, generator: torch.Generator) -> nn.Sequential:
    """Two 3x3 convolution blocks, each halving the image, then a linear map to the neurons."""
    stem = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 16, side/2, side/2)
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 32, side/4, side/4)
        nn.Flatten(),
        nn.Linear(32 * (side // 4) ** 2, n_neurons),  # (B, k): one input per neuron
    )
    with torch.no_grad():  # initialised from the generator, not the global random state
        for module in stem:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu", generator=generator)
                module.bias.zero_()
    return stem


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Flat square images ``(n, side * side)`` as ``(n, 1, side, side)``."""
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1] or side < 4:
        raise ValueError(f"expected flat square images, got {x.shape[1]} features")
    return x.reshape(-1, 1, side, side)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of samples whose arg-max output is the label."""
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]).sum())
        for i in range(0, x.shape[0], batch_size)
    )
    model.train()
    return correct / x.shape[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--neurons", type=int, default=64)
    parser.add_argument("--epsilon", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=None, help="use the first N training samples")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, print one line per epoch, and return the results."""
    args = parse_args(argv)
    try:
        dataset = load_dataset(args.dataset, args.data_dir)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    x_all, y_all = dataset.x_train[: args.limit], dataset.y_train[: args.limit]
    split = validation_split(x_all, y_all, 0.1, args.seed)
    x_train, x_val = as_images(split.x_train), as_images(split.x_val)
    x_test = as_images(dataset.x_test)
    side = x_train.shape[-1]

    init = torch.Generator().manual_seed(args.seed)
    shuffle = torch.Generator().manual_seed(args.seed + 1)
    model = FreeNet(
        side * side,
        args.neurons,
        dataset.n_classes,
        encoder=conv_stem(side, args.neurons, init),
        generator=init,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    # The Evolver zeroes Adam's moments of edges that leave or return, so pruned weights stay put.
    evolver = Evolver(model, epsilon=args.epsilon, optimizer=optimizer)
    loss_fn = nn.CrossEntropyLoss()

    best: dict[str, Any] = {"val_accuracy": -1.0}
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(x_train.shape[0], generator=shuffle)
        total = 0.0
        for start in range(0, x_train.shape[0], args.batch_size):
            index = order[start : start + args.batch_size]
            loss = loss_fn(model(x_train[index]), split.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * index.numel()
        if not evolver.converged:
            evolver.step(x_train)  # NCAM/NCIM over the training images, then Aug and Prune
        val_accuracy = accuracy(model, x_val, split.y_val)
        if val_accuracy > best["val_accuracy"]:
            best = {
                "epoch": epoch,
                "val_accuracy": val_accuracy,
                "test_accuracy": accuracy(model, x_test, dataset.y_test),
                "edges": model.n_edges,
                "state": copy.deepcopy(model.state_dict()),
            }
        print(
            f"epoch {epoch:3d}  loss {total / x_train.shape[0]:.4f}  val {val_accuracy:.4f}  "
            f"edges {model.n_edges:5d}  converged {evolver.converged}  "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
    model.load_state_dict(best.pop("state"))
    print(
        f"best epoch {best['epoch']}: val {best['val_accuracy']:.4f}, "
        f"test {best['test_accuracy']:.4f}, {best['edges']} edges of "
        f"{args.neurons * (args.neurons - 1) // 2}"
    )
    return {**best, "model": model, "converged": evolver.converged}


if __name__ == "__main__":
    main(sys.argv[1:])
