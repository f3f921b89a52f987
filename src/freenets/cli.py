"""The ``freenets`` command line: parse, build a config, call the library.

Every error a user can cause ends as one line on stderr and a non-zero exit, never a traceback.
"""

# One module, one concept: the command line. The parser and one handler per subcommand, each
# turning its options into library calls, so every command and option reads in one place.

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from freenets import __version__
from freenets.data import dataset_locations, dataset_names, is_known, load_dataset, tabular
from freenets.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    Interrupted,
    ReportError,
    SweepError,
    TargetError,
    TrainingFailed,
    UsageError,
)
from freenets.rules import RULES
from freenets.training.config import TrainConfig
from freenets.training.interrupt import StopOnInterrupt

USAGE_ERROR = 2


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help followed by its default, where it has one (not for flags or None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "%(default)" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as a single line and exit status 2, and shows every
    option's default in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="freenets", description="FreeNets: layer-free networks, learned graphs.")
    parser.add_argument("--version", action="version", version=f"freenets {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train FreeEvolve and its equal-parameter FCNN")
    defaults = TrainConfig()
    train.add_argument(
        "--dataset",
        default=defaults.data.dataset,
        help="dataset name (see 'freenets datasets') or a .npz/.csv file",
    )
    train.add_argument(
        "--target", default=None, help="label column of a .csv file (default: the column label)"
    )
    train.add_argument("--neurons", type=int, default=defaults.model.n_neurons, help="neurons k")
    train.add_argument(
        "--rule",
        choices=list(RULES),
        default=defaults.topology.rule,
        help="the FreeNet's topology rule (random and magnitude follow FreeEvolve's rounds, "
        "which trains first, or work at a --density/--edges budget)",
    )
    budget = train.add_mutually_exclusive_group()
    budget.add_argument(
        "--density",
        type=float,
        default=None,
        help="set/rigl/random/magnitude: the edge budget as a fraction of k(k-1)/2",
    )
    budget.add_argument(
        "--edges", type=int, default=None, help="set/rigl/random/magnitude: the budget as a count"
    )
    _add_training_options(train)
    train.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the split, weights and order"
    )
    train.add_argument("--out", default=None, help="run directory (default runs/<time>-...)")
    train.add_argument("--json", action="store_true", help="print the summary as JSON last")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--no-figures", action="store_true", help="skip RUN/figures/")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the interrupted run in RUN_DIR, with the settings saved there",
    )

    sweep = commands.add_parser(
        "sweep", help="the grid datasets x neurons x seeds x models (Table 2, the ablation)"
    )
    sweep.add_argument(
        "--datasets",
        type=_names,
        help="comma-separated dataset names or .npz/.csv files, as freenets train takes them",
    )
    sweep.add_argument(
        "--target", default=None, help="label column of the .csv datasets (default: label)"
    )
    sweep.add_argument("--neurons", type=_numbers, help="comma-separated neuron counts k")
    sweep.add_argument(
        "--models",
        type=_names,
        default=("freeevolve", "fcnn"),
        help="comma-separated: freeevolve, dense, random, magnitude, set, rigl, fcnn, fcnn2",
    )
    sweep.add_argument(
        "--density",
        type=_budgets,
        default="match",
        metavar="D[,D...]",
        help="budgets of set, rigl, random and magnitude as fractions of k(k-1)/2, a grid axis; "
        "'match' sizes them from FreeEvolve's run of each epsilon",
    )
    sweep.add_argument("--paper", action="store_true", help="Table 2's datasets and neurons")
    sweep.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    sweep.add_argument("--out", required=True, help="output directory; rerun it to resume")
    sweep.add_argument("--jobs", type=int, default=1, help="jobs at once")
    sweep.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="where the jobs run: local processes or a Ray cluster",
    )
    sweep.add_argument("--address", default=None, help="Ray cluster address (--backend ray)")
    _add_training_options(sweep, grid=True)
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    report = commands.add_parser("report", help="write DIR/report.html for a run or a sweep")
    report.add_argument("directory", help="a run directory or a sweep directory")
    report.add_argument("--redraw", action="store_true", help="draw the figures again")

    commands.add_parser("datasets", help="list the datasets and where each is read from")

    expressivity = commands.add_parser(
        "expressivity", help="Theorem 1: the FreeNet against every layered topology over k"
    )
    expressivity.add_argument("--out", required=True, help="output directory")
    expressivity.add_argument("--quick", action="store_true", help="a reduced grid (minutes)")
    expressivity.add_argument("--seed", type=int, default=0, help="seed of every batch")

    study = commands.add_parser(
        "study", help="the density study: every rule along density where the graph dominates"
    )
    study.add_argument("--out", required=True, help="output directory; rerun it to resume")
    study.add_argument(
        "--quick", action="store_true", help="two small parts, two seeds, four epochs (minutes)"
    )
    study.add_argument(
        "--parts", type=_names, default=None, help="comma-separated parts (default: all of them)"
    )
    study.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: 5)")
    study.add_argument("--jobs", type=int, default=1, help="jobs at once")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(value) for value in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _budgets(text: str) -> tuple[float | None, ...]:
    try:
        return tuple(None if value == "match" else float(value) for value in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated densities or 'match', got {text!r}"
        ) from None


def _add_training_options(parser: argparse.ArgumentParser, *, grid: bool = False) -> None:
    defaults = TrainConfig()
    parser.add_argument("--data-dir", default=None, help="directory with the datasets' files")
    parser.add_argument(
        "--train-size", type=int, default=None, help="keep N training samples (stratified)"
    )
    if grid:
        parser.add_argument(
            "--epsilon",
            type=_fractions,
            default=(defaults.topology.epsilon,),
            help="FreeEvolve's epsilon, or comma-separated epsilons (a grid axis)",
        )
    else:
        parser.add_argument(
            "--epsilon", type=float, default=defaults.topology.epsilon, help="FreeEvolve epsilon"
        )
    parser.add_argument("--epochs", type=int, default=defaults.optim.epochs, help="training epochs")
    parser.add_argument(
        "--epochs-per-round",
        type=int,
        default=defaults.topology.epochs_per_round,
        help="epochs between two topology rounds",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=defaults.topology.patience,
        help="unchanged FreeEvolve rounds after which the graph has converged",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.optim.batch_size,
        help="samples per optimiser step",
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.optim.learning_rate, help="Adam step size"
    )
    parser.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default=defaults.optim.schedule,
        help="step size over the epochs: cosine decay to 0, or constant",
    )
    parser.add_argument(
        "--readd",
        choices=["restore", "zero"],
        default=defaults.topology.readd,
        help="an edge FreeEvolve adds back resumes its stored weight, or starts from zero",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="where models, data and statistics live: cpu, cuda, mps or auto "
        "(CUDA, else MPS, else the CPU) (default: cpu; a resumed run keeps its own unless given)",
    )
    parser.add_argument(
        "--sparse-grad",
        action="store_true",
        help="the FreeNet's weight gradient and Adam's moments on the active edges only: "
        "memory that follows the edges, not k x k (the same training, to rounding)",
    )
    parser.add_argument(
        "--zeta", type=float, default=defaults.topology.zeta, help="SET's and RigL's drop fraction"
    )
    parser.add_argument(
        "--delta-t",
        type=int,
        default=defaults.topology.delta_t,
        help="RigL's steps between updates",
    )
    parser.add_argument(
        "--rule-stop",
        type=float,
        default=defaults.topology.rule_stop,
        help="the fraction of training after which RigL's graph stays",
    )


def _training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields set by :func:`_add_training_options`, shared by train and sweep."""
    return {
        "data_dir": args.data_dir,
        "train_size": args.train_size,
        "epsilon": args.epsilon[0] if isinstance(args.epsilon, tuple) else args.epsilon,
        "epochs": args.epochs,
        "epochs_per_round": args.epochs_per_round,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "schedule": args.schedule,
        "readd": args.readd,
        "zeta": args.zeta,
        "delta_t": args.delta_t,
        "rule_stop": args.rule_stop,
        "sparse_grad": args.sparse_grad,
        "device": args.device if args.device is not None else "cpu",
    }


def _config(args: argparse.Namespace) -> TrainConfig:
    dataset = args.dataset
    if tabular.is_data_file(dataset):
        # An absolute path keeps config.json meaningful from any working directory.
        dataset = str(Path(dataset).expanduser().resolve())
    config = TrainConfig.of(
        dataset=dataset,
        target=args.target,
        n_neurons=args.neurons,
        seed=args.seed,
        rule=args.rule,
        density=args.density,
        edges=args.edges,
        **_training_settings(args),
    )
    config.validate()
    if not is_known(config.data.dataset):
        raise ConfigError(
            f"unknown dataset {config.data.dataset!r}; choose one of: {', '.join(dataset_names())}, "
            "or give a path to a .npz or .csv file"
        )
    if config.data.target is not None and not config.data.dataset.lower().endswith(".csv"):
        raise ConfigError("--target names the label column of a .csv dataset")
    return config


def _table(summary: dict[str, Any], freenet: str) -> str:
    rows = [("model", "test acc", "val acc", "params", "edges/hidden", "seconds")]
    for name in (freenet, "fcnn"):
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


# With --resume the settings come from the run directory; only these options still apply.
_RESUME_OPTIONS = ("--resume", "--json", "--quiet", "--device")


def _options_besides_resume(argv: Sequence[str]) -> list[str]:
    """Options on the command line (abbreviated or not) that --resume would have to ignore."""
    tokens = list(argv)[list(argv).index("train") + 1 :] if "train" in argv else list(argv)
    given = []
    for token in tokens:
        flag = token.split("=", 1)[0]
        allowed = len(flag) > 2 and any(option.startswith(flag) for option in _RESUME_OPTIONS)
        if flag.startswith("-") and flag != "-" and not allowed:
            given.append(flag)
    return given


def _check_path(value: str, flag: str) -> None:
    """Refuse a path no file system can hold, or that could not be printed back."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{flag} is not valid text: {value!r}") from None
    if not value or "\x00" in value:
        raise UsageError(f"{flag} needs a path, without NUL characters; got {value!r}")


def _train(args: argparse.Namespace) -> int:
    from freenets.experiments import runs

    for flag, value in (
        ("--out", args.out),
        ("--resume", args.resume),
        ("--data-dir", args.data_dir),
    ):
        if value is not None:
            _check_path(value, flag)
    if args.resume is not None:
        others = _options_besides_resume(getattr(args, "argv", []))
        if others:
            raise UsageError(
                f"--resume takes every setting from RUN_DIR/config.json; drop {', '.join(others)}"
            )
        out = Path(args.resume)
        config = runs.read_config(out)
        if args.device is not None:  # a checkpoint goes on on any device
            config = config.replace(device=args.device)
            config.validate()
    else:
        config = _config(args)
        out = Path(args.out) if args.out else runs.default_run_dir(config)
        if (out / "config.json").exists() and not (out / "summary.json").exists():
            raise UsageError(
                f"{out} holds an unfinished run: continue it with --resume {shlex.quote(str(out))}"
                " or choose another --out"
            )
    dataset = load_dataset(
        config.data.dataset,
        config.data.data_dir,
        train_size=config.data.train_size,
        target=config.data.target,
    )
    resume_hint = f"freenets train --resume {shlex.quote(str(out))}"
    stop = StopOnInterrupt("freenets: stopping after this batch (Ctrl-C again to stop at once)")
    try:
        with stop:
            summary = runs.train_run(
                config,
                dataset,
                out,
                show_progress=not args.quiet,
                resume=args.resume is not None,
                should_stop=stop,
                on_written=None if args.no_figures else _draw_run_figures,
            )
    except (Interrupted, KeyboardInterrupt) as error:
        saved = "checkpoint saved" if isinstance(error, Interrupted) else "stopped at once"
        print(f"freenets: interrupted ({saved}); continue with: {resume_hint}", file=sys.stderr)
        if args.json:
            print(json.dumps({"status": "interrupted", "run_directory": str(out)}))
        # 128 + the signal's number, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM.
        return 128 + (stop.signal or signal.SIGINT)
    except TrainingFailed as failure:
        _error(f"training failed: {failure}")
        if args.json and failure.summary is not None:
            print(json.dumps(failure.summary))
        return 1
    print(_table(summary, config.topology.rule))
    flops = summary[config.topology.rule]
    if "flops" in flops:
        label = "FreeEvolve" if config.topology.rule == "freeevolve" else config.topology.rule
        print(
            f"{label} FLOPs per sample: {flops['flops']} "
            f"({flops['flops'] / flops['flops_dense']:.1%} of the dense graph's "
            f"{flops['flops_dense']})"
        )
    print(f"run directory: {out}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _datasets(args: argparse.Namespace) -> int:
    locations = dataset_locations()
    width = max(map(len, locations))
    for name, where in locations.items():
        print(f"{name.ljust(width)}  {where}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from freenets.experiments import sweep
    from freenets.experiments.table import PAPER_DATASETS, PAPER_NEURONS

    if args.paper and (args.datasets or args.neurons):
        raise UsageError(
            "--paper sets the datasets and neurons; leave out --datasets and --neurons"
        )
    if not args.paper and not (args.datasets and args.neurons):
        raise UsageError("give --datasets and --neurons, or --paper")
    train = TrainConfig.of(target=args.target, **_training_settings(args))
    datasets = tuple(
        # An absolute path names the same file from any working directory, as in train.
        str(Path(name).expanduser().resolve()) if tabular.is_data_file(name) else name
        for name in (PAPER_DATASETS if args.paper else args.datasets)
    )
    config = sweep.SweepConfig(
        datasets=datasets,
        neurons=PAPER_NEURONS if args.paper else args.neurons,
        seeds=args.seeds,
        train=train,
        models=args.models,
        densities=args.density,
        epsilons=args.epsilon,
    )
    summary = sweep.run_sweep(
        config,
        args.out,
        backend=args.backend,
        jobs=args.jobs,
        address=args.address,
        show_progress=not args.quiet,
    )
    print(summary.table.read_text(encoding="utf-8"), end="")
    print(
        f"jobs: {summary.total} in the grid, {summary.skipped} already done, {summary.ran} run, "
        f"{summary.failed} failed"
    )
    print(f"results: {summary.results}")
    from freenets.experiments.results import read_results
    from freenets.reporting.figures import write_sweep_figures

    if any(row.ok for row in read_results(summary.results)):
        write_sweep_figures(args.out)
    return 0


def _draw_run_figures(out: Path) -> None:
    from freenets.reporting.figures import write_run_figures  # matplotlib: only when drawing

    write_run_figures(out)


def _report(args: argparse.Namespace) -> int:
    from freenets.reporting.html import write_report

    print(f"report: {write_report(args.directory, redraw=args.redraw)}")
    return 0


def _expressivity(args: argparse.Namespace) -> int:

    from freenets.errors import Busy
    from freenets.experiments import expressivity
    from freenets.reporting.expressivity import write_expressivity_report

    _check_path(args.out, "--out")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    # read at call time, so a test can shrink the quick grid
    config = replace(expressivity.QUICK if args.quick else expressivity.FULL, seed=args.seed)

    def progress(task: Any, k: int, rows: list[Any], seconds: float) -> None:
        freenet = next(row for row in rows if row.kind == "freenet")
        layered = [row for row in rows if row.kind == "layered"]
        solving = sum(1 for row in layered if row.solved)
        print(
            f"{task.name} k={k}: freenet {freenet.solved}/{freenet.restarts} solved, "
            f"{solving}/{len(layered)} layered splits solved ({seconds:.1f} s)",
            flush=True,
        )

    try:
        run = expressivity.run_expressivity(config, args.out, on_cell=progress)
    except Busy:
        _error(f"{args.out} is in use by another run; wait for it or choose another --out")
        return 1
    markdown, image = write_expressivity_report(args.out, run.rows, config, run.seconds)
    print(f"results: {run.csv}\nreport: {markdown}\nfigure: {image}")
    print(f"wall time: {run.seconds:.1f} s")
    return 0


def _error(message: object) -> None:
    """``freenets: error: message`` on stderr, as one line of printable characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
    print(f"freenets: error: {text}", file=sys.stderr)


def _study(args: argparse.Namespace) -> int:
    from freenets.experiments import study
    from freenets.reporting.figures import write_study_figure, write_sweep_figures

    _check_path(args.out, "--out")
    config = study.StudyConfig.quick() if args.quick else study.StudyConfig()
    if args.parts is not None:
        known = {part.name: part for part in (*study.PARTS, *study.QUICK_PARTS)}
        unknown = [name for name in args.parts if name not in known]
        if unknown:
            raise UsageError(f"unknown part {unknown[0]!r}; choose from: {', '.join(known)}")
        config = replace(config, parts=tuple(known[name] for name in args.parts))
    if args.seeds is not None:
        if args.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
        config = replace(config, seeds=args.seeds)

    def drawn(part: Any, where: Path) -> None:
        write_sweep_figures(where)
        print(f"{part.name}: done, results in {where}", flush=True)

    seconds = study.run_study(
        config, args.out, jobs=args.jobs, show_progress=not args.quiet, on_part=drawn
    )
    image = write_study_figure(args.out, config.parts)
    print(f"study: {Path(args.out) / 'study.md'}")
    print(f"figure: {image if image is not None else 'none (no successful runs)'}")
    print(f"wall time: {seconds:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``freenets`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _build_parser().parse_args(argv, argparse.Namespace(argv=argv))
        commands = {
            "train": _train,
            "sweep": _sweep,
            "report": _report,
            "datasets": _datasets,
            "study": _study,
        }
        commands["expressivity"] = _expressivity
        return commands[args.command](args)
    except (UsageError, ConfigError, TargetError) as error:
        _error(error)
        return USAGE_ERROR
    except (DataError, CheckpointError, SweepError, ReportError) as error:
        _error(error)
        return 1
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        _error(f"{error.strerror or error}{where}")
        return 1
    except (MemoryError, RuntimeError) as error:
        # torch reports a failed allocation as RuntimeError("... can't allocate memory ...")
        if isinstance(error, RuntimeError) and "allocate" not in str(error):
            raise
        _error("not enough memory for this run (try fewer --neurons)")
        return 1
    except KeyboardInterrupt:
        print("freenets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
