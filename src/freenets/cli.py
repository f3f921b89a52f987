"""The ``freenets`` command line: parse, build a config, call the library.

Every error a user can cause ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from freenets import __version__
from freenets.data import DataError, dataset_names, load_dataset
from freenets.train import ConfigError, TrainConfig

USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake in how the command was called."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as a single line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="freenets", description="FreeNets: layer-free networks, learned graphs.")
    parser.add_argument("--version", action="version", version=f"freenets {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train FreeEvolve and its equal-parameter FCNN")
    defaults = TrainConfig()
    train.add_argument("--dataset", default=defaults.dataset, help="dataset name (default digits)")
    train.add_argument("--data-dir", default=None, help="directory with the dataset's files")
    train.add_argument("--neurons", type=int, default=defaults.n_neurons, help="neurons k")
    train.add_argument("--epsilon", type=float, default=defaults.epsilon, help="FreeEvolve epsilon")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    train.add_argument("--epochs-per-round", type=int, default=defaults.epochs_per_round)
    train.add_argument("--patience", type=int, default=defaults.patience)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.learning_rate, help="Adam step size")
    train.add_argument("--readd", choices=["restore", "zero"], default=defaults.readd)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--out", default=None, help="run directory (default runs/<time>-...)")
    train.add_argument("--json", action="store_true", help="print the summary as JSON last")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        n_neurons=args.neurons,
        epsilon=args.epsilon,
        epochs=args.epochs,
        epochs_per_round=args.epochs_per_round,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        readd=args.readd,
        seed=args.seed,
    )
    config.validate()
    if config.dataset not in dataset_names():
        raise ConfigError(
            f"unknown dataset {config.dataset!r}; choose one of: {', '.join(dataset_names())}"
        )
    return config


def _table(summary: dict[str, Any]) -> str:
    rows = [("model", "test acc", "val acc", "params", "edges/hidden", "seconds")]
    for name in ("freeevolve", "fcnn"):
        entry = summary[name]
        shape = entry.get("edges", entry.get("hidden"))
        rows.append(
            (
                name,
                f"{entry['test_accuracy']:.4f}",
                f"{entry['val_accuracy']:.4f}",
                str(entry["params"]),
                str(shape),
                f"{entry['seconds']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
    )


def _train(args: argparse.Namespace) -> int:
    from freenets import runs

    config = _config(args)
    dataset = load_dataset(config.dataset, config.data_dir)
    out = Path(args.out) if args.out else runs.default_run_dir(config)
    summary = runs.train_run(config, dataset, out, show_progress=not args.quiet)
    print(_table(summary))
    flops = summary["freeevolve"]
    print(
        f"FreeEvolve FLOPs per sample: {flops['flops']} "
        f"({flops['flops'] / flops['flops_dense']:.1%} of the dense graph's {flops['flops_dense']})"
    )
    print(f"run directory: {out}")
    if args.json:
        print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``freenets`` command; returns the exit status."""
    try:
        args = _build_parser().parse_args(argv)
        return {"train": _train}[args.command](args)
    except (UsageError, ConfigError) as error:
        print(f"freenets: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except DataError as error:
        print(f"freenets: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"freenets: error: {error.strerror or error}: {error.filename or ''}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("freenets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
