"""One way to train a model of a run, checkpointed after every epoch; the run of ``freenets train``.

:func:`train_saved` trains one named model of a run (:func:`~freenets.training.models.train_model`:
FreeEvolve, a FreeNet under any registered rule, or a fully connected baseline) and hands a
checkpoint body to its caller after every epoch: the caller's identity of the training (what the
checkpoint must have been saved for) with the loop's state. Every model trains through it: the two
of ``freenets train`` (:func:`run_pair`: the FreeNet of the run's rule, then the FCNN with as many
parameters, on the same split) and each model of a sweep job
(:mod:`freenets.experiments.jobs`). :func:`result_state` is a finished model as a checkpoint holds
it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from freenets.data import Dataset, Split, validation_split
from freenets.errors import CheckpointError, ConfigError, Interrupted, TrainingFailed
from freenets.rules.base import TopologyChange
from freenets.training.callbacks import Checkpoint, StopWhenAsked
from freenets.training.checkpoint import one_line
from freenets.training.config import TrainConfig
from freenets.training.loop import Callback
from freenets.training.models import Reference, initial_freenet, train_model
from freenets.training.optim import load_weights
from freenets.training.records import EpochRecord, ModelResult
from freenets.training.state import FitState, check_result

__all__ = ["result_state", "run_pair", "train_saved"]


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
    """The FreeNet's result (FreeEvolve's, or ``config.topology.rule``'s) saved by :func:`result_state`."""
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
        config.topology.rule,
        model,
        **numbers,
        epochs=epochs,
        rounds=rounds,
        masks=masks,
        extra=dict(data["extra"]),
    )


def train_saved(
    name: str,
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    reference: Reference,
    *,
    density: float | None = None,
    identity: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    state: FitState | None = None,
    callbacks: Sequence[Callback] = (),
    should_stop: Callable[[], bool] | None = None,
) -> ModelResult:
    """Train model ``name`` of a run, saving a checkpoint body after every epoch.

    Parameters
    ----------
    name, dataset, split, config, reference, density
        As :func:`~freenets.training.models.train_model` takes them.
    identity : dict, optional
        What the checkpoint is for; each body ``save`` gets is ``identity`` with ``fit``, the
        loop's state (:meth:`FitState.to_dict`), added.
    save : callable, optional
        Writes a checkpoint body: after every epoch, and where a stop was asked for.
    state : FitState, optional
        The ``fit`` of such a body, to go on from.
    callbacks : sequence of Callback
        Passed to :func:`fit` after the checkpoint and before the stop.
    should_stop : callable, optional
        Asked after every batch that leaves more of its epoch, and after every epoch but the
        last (:class:`~freenets.training.callbacks.StopWhenAsked`).

    Raises
    ------
    TrainingFailed
        If the model diverges.
    Interrupted
        If ``should_stop`` asked to stop (after the checkpoint was saved).
    """
    hooks: list[Callback] = []
    if save is not None:
        body = dict(identity or {})
        hooks.append(Checkpoint(lambda fit_state: save({**body, "fit": fit_state.to_dict()})))
    hooks.extend(callbacks)
    if should_stop is not None:
        hooks.append(StopWhenAsked(should_stop))
    return train_model(name, dataset, split, config, reference, hooks, density=density, state=state)


def run_pair(
    dataset: Dataset,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    *,
    resume: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[ModelResult, ModelResult]:
    """The FreeNet of ``config.topology.rule`` (FreeEvolve by default), then the FCNN matched to
    its effective parameters, on the same split, each through :func:`train_saved`.

    A rule other than FreeEvolve trains from FreeEvolve's initial weights and sample order, as in
    a sweep; SET and RigL need a density or edge budget. The random and magnitude controls
    follow the rounds of FreeEvolve on the same split and seed, which trains first (not saved,
    and trained again on a resume); with a budget they are the static random graph and gradual
    magnitude pruning instead.

    Parameters
    ----------
    callbacks : sequence of Callback
        Passed to both models' :func:`fit`, after the checkpoint and before the stop.
    resume : dict, optional
        A checkpoint's body (``phase``, ``fit``, ``freeevolve``; see
        :func:`freenets.training.checkpoint.check_body`) to go on from.
    checkpoint : callable, optional
        Called with such a body after every epoch, when the FreeNet is done, and before stopping.
        The body's ``phase`` is ``"freeevolve"`` while the FreeNet trains (whatever its rule) and
        ``"fcnn"`` after, when ``freeevolve`` holds the FreeNet's result (:func:`result_state`).
    should_stop : callable, optional
        Asked after every batch that leaves more of its epoch, and after every epoch but the
        last (:class:`~freenets.training.callbacks.StopWhenAsked`).

    Raises
    ------
    TrainingFailed
        If either model diverges; ``finished`` then holds the FreeNet's result if it was done.
    Interrupted
        If ``should_stop`` asked to stop.
    """
    config.validate()
    topology = config.topology
    if topology.rule in ("set", "rigl") and topology.density is None and topology.edges is None:
        raise ConfigError(f"rule {topology.rule!r} needs --density or --edges, its budget")
    split = validation_split(
        dataset.x_train, dataset.y_train, config.data.val_fraction, config.seed
    )
    resume = resume or {"phase": "freeevolve", "fit": None, "freeevolve": None}
    state = None
    if resume["fit"] is not None:
        n_train = split.x_train.shape[0]
        state = FitState.from_dict(resume["fit"], epochs=config.optim.epochs, n_train=n_train)
    if resume["phase"] == "fcnn":
        finished = resume["freeevolve"]
        freenet = _freeevolve_result(finished, dataset, config)
    else:
        reference = Reference(params=0, edges=0, round_changes=())
        budget = topology.density is not None or topology.edges is not None
        if topology.rule in ("random", "magnitude") and not budget:
            # The controls follow FreeEvolve's rounds of this very run: trained first, and
            # again on a resume (deterministic, so the control goes on with the same counts).
            freeevolve = config.replace(rule="freeevolve")
            reference = Reference.of(
                train_model("freeevolve", dataset, split, freeevolve, reference)
            )
        freenet = train_saved(
            topology.rule,
            dataset,
            split,
            config,
            reference,
            identity={"phase": "freeevolve", "freeevolve": None},
            save=checkpoint,
            state=state,
            callbacks=callbacks,
            should_stop=should_stop,
        )
        finished, state = result_state(freenet), None
        if checkpoint is not None:
            checkpoint({"phase": "fcnn", "fit": None, "freeevolve": finished})
        if should_stop is not None and should_stop():
            raise Interrupted("stopped after FreeEvolve")
    try:
        fcnn = train_saved(
            "fcnn",
            dataset,
            split,
            config,
            Reference(params=freenet.params, edges=0, round_changes=()),
            identity={"phase": "fcnn", "freeevolve": finished},
            save=checkpoint,
            state=state,
            callbacks=callbacks,
            should_stop=should_stop,
        )
    except TrainingFailed as failure:
        failure.finished.append(freenet)
        raise
    return freenet, fcnn
