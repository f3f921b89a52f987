"""One sweep job: every run of one (dataset, neurons, seed, epsilon), in one run directory.

FreeEvolve and its FCNN train first, as ``freenets train`` trains them
(:func:`freenets.experiments.runs.train_run`, into ``RUN/``): the other models are sized from that
FreeEvolve run (a :class:`~freenets.training.models.Reference`: its chosen model's parameters
and edges, the edges pruned and added in each of its rounds), or work at a fixed budget. Each
other run trains into ``RUN/<model>/`` (``RUN/<model>-d<budget>/`` at a fixed budget;
``summary.json``, ``history.json``, ``model.pt``) with the same split, sample order and initial
weights, through the one way every model of a run trains and is checkpointed
(:func:`freenets.training.train.train_saved`). The paper's Algorithm 1 with
other topology rules, and section 5's baselines, on one footing.

Reliability, as for a run: ``summary.json`` is written last, so a directory that has it is
finished and is reused, never trained again (adding models to a sweep trains only those); while
a model trains, ``checkpoint.pt`` holds its state after each epoch, so a job killed mid-way goes
on from there, with the result it would have had. Every file is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from freenets import atomic
from freenets.data import Dataset, validation_split
from freenets.errors import CheckpointError, TrainingFailed
from freenets.experiments.results import DEFAULT_MODELS
from freenets.training.checkpoint import (
    ADDED_SETTINGS,
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from freenets.training.config import TrainConfig
from freenets.training.models import Reference
from freenets.training.records import ModelResult
from freenets.training.state import FitState
from freenets.training.train import train_saved

# Models sized from FreeEvolve's run; the budgeted rules only without a fixed density.
SIZED = ("freeevolve", "fcnn", "fcnn2")
BUDGETED = ("random", "magnitude", "set", "rigl")


def needs_freeevolve(models: tuple[str, ...], density: float | None) -> bool:
    """Whether any of ``models`` needs FreeEvolve's run (always trained first when it does)."""
    return any(m in SIZED or (m in BUDGETED and density is None) for m in models)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pair(config: TrainConfig, dataset: Dataset, run_dir: Path) -> dict[str, Any]:
    """FreeEvolve and its FCNN in ``run_dir``: the summary found there, or one trained now."""
    from freenets.experiments.runs import read_config, train_run

    summary = _read_json(run_dir / "summary.json")
    checkpoint = run_dir / CHECKPOINT_NAME
    if isinstance(summary, dict) and "status" in summary and not checkpoint.is_file():
        try:
            if read_config(run_dir) == config:
                return summary
        except CheckpointError:
            pass  # no usable config.json: train again
    try:
        # A job killed mid-way goes on from its last epoch; resumed runs are bit-identical.
        return train_run(config, dataset, run_dir, show_progress=False, resume=checkpoint.is_file())
    except TrainingFailed as failure:
        atomic.write_json(run_dir / "failed.json", {"reason": str(failure)})
        return failure.summary or {"status": "failed", "reason": str(failure)}


def _reference(summary: dict[str, Any], run_dir: Path) -> Reference | None:
    """FreeEvolve's sizes from its run directory; ``None`` where the run failed."""
    if summary.get("status") != "ok":
        return None
    freeevolve = summary["freeevolve"]
    history = _read_json(run_dir / "history.json") or {}
    rounds = history.get("freeevolve", {}).get("rounds", [])
    return Reference(
        params=int(freeevolve["params"]),
        edges=int(freeevolve["edges"]),
        round_changes=tuple((int(record["pruned"]), int(record["added"])) for record in rounds),
    )


def _fit_state(
    path: Path, body_key: dict[str, Any], config: TrainConfig, n_train: int
) -> FitState | None:
    """The state saved in ``path`` for exactly this training, else ``None`` (start afresh)."""
    try:
        body = load_checkpoint(path)
    except (FileNotFoundError, CheckpointError):
        return None
    if isinstance(body.get("settings"), dict):  # settings added since take their defaults
        body = {**body, "settings": {**ADDED_SETTINGS, **body["settings"]}}
    if {key: body.get(key) for key in body_key} != body_key:
        return None
    try:
        return FitState.from_dict(body["fit"], epochs=config.optim.epochs, n_train=n_train)
    except (CheckpointError, KeyError):
        return None


def _train_one(
    name: str,
    config: TrainConfig,
    dataset: Dataset,
    reference: Reference,
    model_dir: Path,
    density: float | None,
) -> dict[str, Any]:
    """Train model ``name`` into ``model_dir`` (or go on from its checkpoint); its summary."""
    split = validation_split(
        dataset.x_train, dataset.y_train, config.data.val_fraction, config.seed
    )
    checkpoint = model_dir / CHECKPOINT_NAME
    # What a checkpoint must have been saved for; lists, not tuples, survive torch.save as saved.
    identity = {
        "model": name,
        "settings": config.to_dict(),
        "density": density,
        "reference": {
            **asdict(reference),
            "round_changes": [list(change) for change in reference.round_changes],
        },
    }
    state = _fit_state(checkpoint, identity, config, int(split.x_train.shape[0]))
    try:
        result: ModelResult = train_saved(
            name,
            dataset,
            split,
            config,
            reference,
            density=density,
            identity=identity,
            save=lambda body: save_checkpoint(checkpoint, body),
            state=state,
        )
    except TrainingFailed as failure:
        summary = {"status": "failed", "reason": str(failure)}
        atomic.write_json(model_dir / "summary.json", summary)
        checkpoint.unlink(missing_ok=True)
        return summary
    atomic.write_json(model_dir / "history.json", {name: result.history()})
    atomic.torch_save(model_dir / "model.pt", result.model.state_dict())
    summary = {"status": "ok", **result.summary()}
    atomic.write_json(model_dir / "summary.json", summary)
    checkpoint.unlink(missing_ok=True)
    return summary


def _model(
    name: str,
    config: TrainConfig,
    dataset: Dataset,
    reference: Reference | None,
    model_dir: Path,
    density: float | None,
) -> dict[str, Any]:
    """The summary of model ``name``: found in ``model_dir``, or trained now under its lock."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with atomic.exclusive(model_dir):  # two processes would mix one model's checkpoint
        summary = _read_json(model_dir / "summary.json")
        if isinstance(summary, dict) and summary.get("status") in ("ok", "failed"):
            return summary
        if reference is None:  # a dense FreeNet or a density budget needs no FreeEvolve run
            reference = Reference(params=0, edges=0, round_changes=())
        return _train_one(name, config, dataset, reference, model_dir, density)


def model_dir(run_dir: str, model: str, budget: float | None = None) -> str:
    """Where ``model``'s files lie, relative to the sweep: the run directory for the pair,
    ``RUN/<model>`` for the others, ``RUN/<model>-d<budget>`` at a fixed density."""
    if model in DEFAULT_MODELS:
        return run_dir
    return f"{run_dir}/{model}" if budget is None else f"{run_dir}/{model}-d{budget:g}"


def train_runs(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    runs: tuple[tuple[str, float | None], ...],
) -> dict[tuple[str, float | None], dict[str, Any]]:
    """Train ``runs`` of one (dataset, neurons, seed, epsilon) in ``run_dir``; each one's summary.

    Parameters
    ----------
    config : TrainConfig
        The job's settings (its dataset, neurons, seed and epsilon).
    run_dir : Path
        FreeEvolve's run directory; the other models go into its subdirectories
        (:func:`model_dir`).
    runs : tuple of (str, float or None)
        ``(model, budget)``: a name from :data:`freenets.experiments.results.MODELS` and, for a
        budgeted rule, its fixed density (``None``: sized from FreeEvolve's run).

    Returns
    -------
    dict
        ``(model, budget) -> summary``: ``status`` ``"ok"`` with the numbers of
        :meth:`~freenets.training.records.ModelResult.summary`, or ``"failed"`` and a ``reason``.
        A model sized from a FreeEvolve run that failed fails with that run's reason.
    """
    outcomes: dict[tuple[str, float | None], dict[str, Any]] = {}
    reference = None
    failure = ""
    if any(needs_freeevolve((name,), budget) for name, budget in runs):
        pair = _pair(config, dataset, run_dir)
        reference = _reference(pair, run_dir)
        if reference is None:
            failure = str(pair.get("reason", "FreeEvolve's run failed"))
        for name in DEFAULT_MODELS:
            if (name, None) in runs:
                # Both fail together: the FCNN's size comes from FreeEvolve, pairs go by seed.
                outcomes[(name, None)] = (
                    {"status": "ok", **pair[name]}
                    if reference is not None
                    else {"status": "failed", "reason": failure}
                )
    for name, budget in runs:
        if (name, budget) in outcomes:
            continue
        if needs_freeevolve((name,), budget) and reference is None:
            outcomes[(name, budget)] = {"status": "failed", "reason": failure}
            continue
        where = run_dir.parent / model_dir(run_dir.name, name, budget)
        outcomes[(name, budget)] = _model(name, config, dataset, reference, where, budget)
    return {run: outcomes[run] for run in runs}
