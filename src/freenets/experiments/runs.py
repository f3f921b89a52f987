"""A run directory: config.json, history.json, summary.json, the trained models and the graph.

``config.json`` is written first; ``summary.json`` is written last, so a directory without it holds
no results. While training, ``checkpoint.pt`` holds the state of the latest epoch (or of the batch
where a stop was asked for), so that ``train_run(..., resume=True)`` goes on from it; it is removed
once ``summary.json`` is written. A run that diverges gets a ``summary.json`` with ``"status":
"failed"`` and the reason. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freenets import __version__, atomic, export
from freenets.data import Dataset
from freenets.errors import CheckpointError, ConfigError, TrainingFailed
from freenets.model import FreeNet
from freenets.training.callbacks import ProgressBars
from freenets.training.checkpoint import (
    CHECKPOINT_NAME,
    data_shape,
    load_run_state,
    one_line,
    save_run_state,
)
from freenets.training.config import TrainConfig
from freenets.training.optim import load_weights
from freenets.training.records import ModelResult
from freenets.training.train import run_pair


def default_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    """``runs/<time>-<dataset>-k<neurons>``, unique to the second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # A data file's path would nest folders: its stem names the run.
    return Path(root) / f"{stamp}-{Path(config.data.dataset).stem}-k{config.model.n_neurons}"


def summarise(config: TrainConfig, freenet: ModelResult, fcnn: ModelResult) -> dict[str, Any]:
    """The run's summary, as printed by ``freenets train --json``: the FreeNet's numbers under
    its rule's name (``freeevolve`` by default) and the FCNN's under ``fcnn``."""
    assert isinstance(freenet.model, FreeNet)  # run_pair trains a FreeNet under its rule
    return {
        **_header(config),
        "status": "ok",
        freenet.name: {**freenet.summary(), **_flops(freenet.model)},
        "fcnn": fcnn.summary(),
    }


def _flops(model: FreeNet) -> dict[str, int]:
    """FLOPs per sample of the learned graph and of the dense initial one (Linear encoders)."""
    if not isinstance(model.encoder, nn.Linear):
        return {}
    return {"flops": model.flops(), "flops_dense": model.flops(dense=True)}


def _header(config: TrainConfig) -> dict[str, Any]:
    header = {
        "dataset": config.data.dataset,
        "neurons": config.model.n_neurons,
        "epsilon": config.topology.epsilon,
        "seed": config.seed,
        "epochs": config.optim.epochs,
    }
    if config.topology.rule != "freeevolve":  # the default run's summary keeps its keys
        header["rule"] = config.topology.rule
    return header


def failed_summary(config: TrainConfig, failure: TrainingFailed) -> dict[str, Any]:
    """The summary of a run that diverged: no accuracy for the model that failed."""
    summary: dict[str, Any] = {**_header(config), "status": "failed", "reason": str(failure)}
    finished = {result.name: result for result in failure.finished}
    for name in (config.topology.rule, "fcnn"):
        if name in finished:
            summary[name] = {"status": "ok", **finished[name].summary()}
        elif name == failure.name:
            summary[name] = {"status": "failed", "reason": failure.reason}
        else:
            summary[name] = {
                "status": "skipped",
                "reason": f"its size follows {config.topology.rule}'s",
            }
    return summary


def save_model(path: str | Path, model: FreeNet) -> None:
    """Save a FreeNet's sizes, bias bound and state (weights and mask); see :func:`load_model`."""
    atomic.torch_save(
        path,
        {
            "in_features": model.in_features,
            "n_neurons": model.n_neurons,
            "out_features": model.out_features,
            "bias_bound": model.bias_bound,
            "state_dict": model.state_dict(),
        },
    )


def load_model(path: str | Path) -> FreeNet:
    """Load a FreeNet saved by :func:`save_model` (``torch.load`` with ``weights_only=True``).

    The tensors are checked as a checkpoint's are: the names, shapes and dtypes of the model's,
    and a mask that is a DAG (strictly lower-triangular). A file written before the bias bound
    was saved gets the default, 0.1.

    Raises
    ------
    ValueError
        If the file is not a saved FreeNet, or its tensors do not fit one; the message is one line
        naming the file.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    try:
        if not isinstance(saved, dict):
            raise ValueError("it holds no saved FreeNet")
        bias_bound = saved.get("bias_bound", 0.1)
        if isinstance(bias_bound, bool) or not isinstance(bias_bound, (int, float)):
            raise ValueError(f"bias_bound is {bias_bound!r}")
        if not math.isfinite(bias_bound) or bias_bound < 0:
            raise ValueError(f"bias_bound must be a non-negative number, got {bias_bound}")
        model = FreeNet(
            saved["in_features"],
            saved["n_neurons"],
            saved["out_features"],
            bias_bound=float(bias_bound),
        )
        state = saved["state_dict"]
        if not isinstance(state, dict):
            raise ValueError("its state_dict is not a dict of tensors")
        load_weights(model, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        missing = isinstance(error, KeyError)
        reason = f"{error.args[0]!r} is missing" if missing else one_line(error)
        raise ValueError(f"{path} is not a FreeNet saved by freenets: {reason}") from None
    return model


def read_config(run_dir: str | Path) -> TrainConfig:
    """The configuration saved in ``run_dir/config.json``; CheckpointError if there is none."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory: it has no config.json")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError too
        raise CheckpointError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a configuration")
    data.pop("freenets", None)  # the version that wrote it
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None


def train_run(
    config: TrainConfig,
    dataset: Dataset,
    out: str | Path,
    *,
    show_progress: bool = True,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    on_written: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Train FreeEvolve (or ``config.topology.rule``'s FreeNet) and its FCNN, write ``out``, return the summary.

    Parameters
    ----------
    resume : bool, default False
        Go on from ``out/checkpoint.pt`` (from the start where there is none yet) instead of
        starting a new run; ``config`` must be the one in ``out/config.json``.
    should_stop : callable, optional
        Asked after every batch; once it returns True, the state is saved in ``checkpoint.pt``
        and :class:`freenets.errors.Interrupted` is raised.
    on_written : callable, optional
        Called with ``out`` once the results are written, for what is derived from them (the
        command line draws the figures with :func:`freenets.reporting.figures.write_run_figures`).
        An exception it raises becomes a warning: the results are complete and stay.

    Raises
    ------
    TrainingFailed
        If training diverged; ``summary.json`` then says so, and the exception's ``summary`` too.
    CheckpointError
        If ``resume`` finds a finished run, or a checkpoint that is damaged or does not match,
        or another process is training in ``out``.
    """
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with atomic.exclusive(out):  # two processes writing one run's checkpoint would mix states
            return _train_run(config, dataset, out, show_progress, resume, should_stop, on_written)
    except atomic.Busy:
        raise CheckpointError(
            f"another freenets process is training in {out}; wait for it to end"
        ) from None


def _train_run(
    config: TrainConfig,
    dataset: Dataset,
    out: Path,
    show_progress: bool,
    resume: bool,
    should_stop: Callable[[], bool] | None,
    on_written: Callable[[Path], None] | None,
) -> dict[str, Any]:
    settings = config.to_dict()
    shape = data_shape(dataset.n_features, dataset.n_classes, int(dataset.x_train.shape[0]))
    state = None
    if resume:
        if (out / "summary.json").exists():
            raise CheckpointError(f"{out} has finished (it has a summary.json): nothing to resume")
        state = load_run_state(out, settings, shape)
        for stale in out.glob(".*.tmp"):  # left by a write that was killed
            stale.unlink(missing_ok=True)
    else:
        atomic.write_json(out / "config.json", {"freenets": __version__, **settings})

    def checkpoint(body: dict[str, Any]) -> None:
        save_run_state(out, settings, shape, body)

    bars = ProgressBars(config.optim.epochs, show_progress)
    try:
        freeevolve, fcnn = run_pair(
            dataset,
            config,
            [bars],
            resume=state,
            checkpoint=checkpoint,
            should_stop=should_stop,
        )
    except TrainingFailed as failure:
        failure.summary = failed_summary(config, failure)
        atomic.write_json(out / "summary.json", failure.summary)
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)
        raise
    finally:
        bars.close()
    name = freeevolve.name  # the FreeNet's rule: "freeevolve" unless --rule says otherwise
    atomic.write_json(out / "history.json", {name: freeevolve.history(), "fcnn": fcnn.history()})
    model = freeevolve.model
    assert isinstance(model, FreeNet)  # run_pair trains a FreeNet under its rule
    save_model(out / f"{name}.pt", model)
    export.write_graphml(model, out / f"{name}.graphml")
    export.write_dot(model, out / f"{name}.dot")
    atomic.torch_save(out / "fcnn.pt", fcnn.model.state_dict())
    if freeevolve.masks:
        # (rounds + 1, k, k) bool: the graph before the first round, then after each round.
        atomic.torch_save(out / "masks.pt", torch.stack(freeevolve.masks))
    summary = summarise(config, freeevolve, fcnn)
    atomic.write_json(out / "summary.json", summary)
    (out / CHECKPOINT_NAME).unlink(missing_ok=True)
    if on_written is not None:
        try:
            on_written(out)
        except Exception as error:
            # The results are written and complete; figures are derived from them and
            # `freenets report` draws them again, so whatever stops a figure (odd records in a
            # resumed history, a plotting error) is a warning, never a lost or failed run.
            warnings.warn(f"figures for {out} could not be drawn: {error}", stacklevel=3)
    return summary
