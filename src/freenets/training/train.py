"""The run of ``freenets train``: FreeEvolve (Algorithm 1), then its FCNN baseline, on one split.

:func:`run_pair` trains FreeEvolve, then the one-hidden-layer FCNN with as many parameters, on the
same validation split, and can go on from a checkpoint of either phase; :func:`result_state` is a
finished model as that checkpoint holds it. Each model trains by its function in
:mod:`freenets.training.models`, through the one loop, :func:`freenets.training.loop.fit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from freenets.data import Dataset, validation_split
from freenets.errors import CheckpointError, ConfigError, Interrupted, TrainingFailed
from freenets.rules.base import TopologyChange
from freenets.training.callbacks import Checkpoint, StopWhenAsked
from freenets.training.checkpoint import one_line
from freenets.training.config import TrainConfig
from freenets.training.loop import Callback
from freenets.training.models import (
    Reference,
    initial_freenet,
    model_rule,
    train_fcnn,
    train_freeevolve,
    train_rule,
)
from freenets.training.optim import load_weights
from freenets.training.records import EpochRecord, ModelResult
from freenets.training.state import FitState, check_result

__all__ = ["result_state", "run_pair"]


def result_state(result: ModelResult) -> dict[str, Any]:
    """A finished model's result as plain values and tensors, for a checkpoint."""
    return {
        "model": result.model.state_dict(),
        "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy,
        "best_epoch": result.best_epoch,
        "params": result.params,
        "seconds": result.seconds,
        **result.history(),
        "masks": torch.stack(result.masks) if result.masks else None,
        "extra": dict(result.extra),
    }


def _freeevolve_result(data: dict[str, Any], dataset: Dataset, config: TrainConfig) -> ModelResult:
    """The FreeNet's result (FreeEvolve's, or ``config.rule``'s) saved by :func:`result_state`."""
    model, _ = initial_freenet(dataset, config)
    try:
        load_weights(model, check_result(data)["model"])
        if data["params"] != model.effective_params():
            raise ValueError(f"it has {model.effective_params()} parameters, not {data['params']}")
        epochs = [EpochRecord(**record) for record in data["epochs"]]
        rounds = [TopologyChange(**record) for record in data["rounds"]]
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(
            f"the checkpoint's FreeEvolve model does not fit: {one_line(error)}"
        ) from None
    fields = ("test_accuracy", "val_accuracy", "best_epoch", "params", "seconds")
    numbers = {key: data[key] for key in fields}
    masks = [] if data["masks"] is None else [mask.clone() for mask in data["masks"]]
    return ModelResult(
        config.rule,
        model,
        **numbers,
        epochs=epochs,
        rounds=rounds,
        masks=masks,
        extra=dict(data["extra"]),
    )


def run_pair(
    dataset: Dataset,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    *,
    resume: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[ModelResult, ModelResult]:
    """FreeEvolve (or the FreeNet of ``config.rule``), then the FCNN matched to its effective
    parameters, on the same split.

    A rule other than FreeEvolve trains from FreeEvolve's initial weights and sample order, as in
    a sweep (:func:`~freenets.training.models.train_rule`); SET and RigL need ``config.density``
    or ``config.edges``. The random and magnitude controls follow the rounds of FreeEvolve on
    the same split and seed, which trains first (not saved, and trained again on a resume);
    with a budget they are the static random graph and gradual magnitude pruning instead.

    Parameters
    ----------
    callbacks : sequence of Callback
        Passed to both models' :func:`fit`, after the checkpoint and before the stop.
    resume : dict, optional
        A checkpoint's body (``phase``, ``fit``, ``freeevolve``; see
        :func:`freenets.training.checkpoint.check_body`) to go on from.
    checkpoint : callable, optional
        Called with such a body after every epoch, when FreeEvolve is done, and before stopping.
    should_stop : callable, optional
        Asked after every batch that leaves more of its epoch, and after every epoch but the
        last (:class:`~freenets.training.callbacks.StopWhenAsked`).

    Raises
    ------
    TrainingFailed
        If either model diverges; ``finished`` then holds FreeEvolve's result if it was done.
    Interrupted
        If ``should_stop`` asked to stop.
    """
    config.validate()
    if config.rule in ("set", "rigl") and config.density is None and config.edges is None:
        raise ConfigError(f"rule {config.rule!r} needs --density or --edges, its budget")
    split = validation_split(dataset.x_train, dataset.y_train, config.val_fraction, config.seed)
    resume = resume or {"phase": "freeevolve", "fit": None, "freeevolve": None}
    rule = None
    if config.rule != "freeevolve" and resume["phase"] != "fcnn":
        reference = Reference(params=0, edges=0, round_changes=())
        budget = config.density is not None or config.edges is not None
        if config.rule in ("random", "magnitude") and not budget:
            # The controls follow FreeEvolve's rounds of this very run: trained first, and
            # again on a resume (deterministic, so the control goes on with the same counts).
            freeevolve_config = replace(config, rule="freeevolve")
            reference = Reference.of(train_freeevolve(dataset, split, freeevolve_config))
        rule = model_rule(config.rule, config, reference)
    state = None
    if resume["fit"] is not None:
        n_train = split.x_train.shape[0]
        state = FitState.from_dict(resume["fit"], epochs=config.epochs, n_train=n_train)

    def hooks(phase: str, finished: dict[str, Any] | None) -> list[Callback]:
        """Checkpoints of ``phase``, the caller's callbacks, and the stop, in that order."""
        found: list[Callback] = []
        if checkpoint is not None:
            found.append(
                Checkpoint(
                    lambda fit_state: checkpoint(
                        {"phase": phase, "fit": fit_state.to_dict(), "freeevolve": finished}
                    )
                )
            )
        found.extend(callbacks)
        if should_stop is not None:
            found.append(StopWhenAsked(should_stop))
        return found

    if resume["phase"] == "fcnn":
        finished = resume["freeevolve"]
        freeevolve = _freeevolve_result(finished, dataset, config)
    else:
        if rule is not None:
            freeevolve = train_rule(
                dataset, split, config, rule, hooks("freeevolve", None), state=state
            )
        else:
            freeevolve = train_freeevolve(
                dataset, split, config, hooks("freeevolve", None), state=state
            )
        finished, state = result_state(freeevolve), None
        if checkpoint is not None:
            checkpoint({"phase": "fcnn", "fit": None, "freeevolve": finished})
        if should_stop is not None and should_stop():
            raise Interrupted("stopped after FreeEvolve")
    try:
        fcnn = train_fcnn(
            dataset, split, config, freeevolve.params, hooks("fcnn", finished), state=state
        )
    except TrainingFailed as failure:
        failure.finished.append(freeevolve)
        raise
    return freeevolve, fcnn
