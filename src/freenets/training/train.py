"""Training FreeEvolve (Algorithm 1) and its FCNN baseline, with model selection on validation.

A run trains FreeEvolve (:func:`train_freeevolve`), then the one-hidden-layer FCNN with as many
parameters (:func:`train_fcnn`), on the same validation split; :func:`run_pair` does both and can
go on from a checkpoint of either phase. The loop itself is :func:`freenets.training.loop.fit`,
with FreeEvolve as its topology rule (:class:`~freenets.rules.freeevolve.FreeEvolveRule`).

The ablation's other models (:func:`train_model`) train on the same split, in the same order of
samples and from the same initial weights, each sized from FreeEvolve's run (a
:class:`Reference`): the dense FreeNet (no topology change), the random and magnitude controls
(FreeEvolve's edge count after each round), SET and RigL (the chosen FreeEvolve model's edge
count as their budget), and the FCNN2 baseline (two hidden layers, FreeEvolve's parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from freenets import graph
from freenets.baselines import FCNN, FCNN2, matching_width, matching_width2
from freenets.data import Dataset, Split, validation_split
from freenets.errors import CheckpointError, ConfigError, Interrupted, TrainingFailed
from freenets.model import FreeNet
from freenets.rules.base import TopologyRule, as_readd
from freenets.rules.dense import DenseRule
from freenets.rules.freeevolve import FreeEvolveRule, theorem2_holds
from freenets.rules.pruning import MagnitudeRule, RandomRule
from freenets.rules.sparse import RigLRule, SETRule
from freenets.stats import coactivation
from freenets.training.callbacks import Callback, Checkpoint, StopWhenAsked
from freenets.training.checkpoint import FitState, check_result, one_line
from freenets.training.config import TrainConfig
from freenets.training.loop import fit
from freenets.training.optim import load_weights
from freenets.training.records import EpochRecord, ModelResult, RoundRecord
from freenets.training.tasks import DIVERGENCE_FACTOR, accuracy

__all__ = [
    "DIVERGENCE_FACTOR",
    "ConfigError",
    "EpochRecord",
    "Interrupted",
    "ModelResult",
    "Reference",
    "RoundRecord",
    "TrainConfig",
    "TrainingFailed",
    "accuracy",
    "fit",
    "result_state",
    "run_pair",
    "train_fcnn",
    "train_fcnn2",
    "train_freeevolve",
    "train_model",
    "train_rule",
]


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Independent generators for initialisation and for shuffling, both fixed by ``seed``."""
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 7919)


def train_freeevolve(
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    *,
    state: FitState | None = None,
) -> ModelResult:
    """Algorithm 1 on a dense FreeNet, then weight training on the frozen graph.

    Parameters
    ----------
    callbacks : sequence of Callback
        Passed to :func:`fit` (checkpoints, stops, progress bars).
    state : FitState, optional
        Where an earlier call stopped (see :func:`fit`).
    """
    init, shuffle = _generators(config.seed)
    model = FreeNet(
        dataset.n_features,
        config.n_neurons,
        dataset.n_classes,
        bias_bound=config.bias_bound,
        generator=init,
    )
    rule = FreeEvolveRule(
        config.epsilon,
        patience=config.patience,
        readd=as_readd(config.readd),
    )
    result = fit(
        "freeevolve",
        model,
        (split.x_train, split.y_train),
        config,
        shuffle,
        validation=(split.x_val, split.y_val),
        test=(dataset.x_test, dataset.y_test),
        rule=rule,
        callbacks=callbacks,
        state=state,
    )
    # Theorem 2 at the chosen model: Aug and not Prune must already be edges at a fixed point.
    ncam, ncim = coactivation(model, split.x_train)
    converged_round = next((r.round for r in result.rounds if r.added == 0 and r.pruned == 0), None)
    result.extra.update(
        {
            "edges": model.n_edges,
            "density": round(graph.density(model.mask), 6),
            "rounds": len(result.rounds),
            "first_unchanged_round": converged_round,
            "theorem2_holds": theorem2_holds(model.mask, ncam, ncim, config.epsilon),
        }
    )
    return result


def train_fcnn(
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    target_params: int,
    callbacks: Sequence[Callback] = (),
    *,
    state: FitState | None = None,
) -> ModelResult:
    """The one-hidden-layer baseline with as many parameters as ``target_params``.

    ``callbacks`` and ``state`` are passed to :func:`fit`.
    """
    width = matching_width(dataset.n_features, dataset.n_classes, target_params)
    return _train_baseline(
        "fcnn", FCNN, width, dataset, split, config, target_params, callbacks, state
    )


def train_fcnn2(
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    target_params: int,
    callbacks: Sequence[Callback] = (),
    *,
    state: FitState | None = None,
) -> ModelResult:
    """The two-hidden-layer baseline with as many parameters as ``target_params``.

    ``callbacks`` and ``state`` are passed to :func:`fit`.
    """
    width = matching_width2(dataset.n_features, dataset.n_classes, target_params)
    return _train_baseline(
        "fcnn2", FCNN2, width, dataset, split, config, target_params, callbacks, state
    )


def _train_baseline(
    name: str,
    build: Callable[..., nn.Module],
    width: Any,
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    target_params: int,
    callbacks: Sequence[Callback],
    state: FitState | None,
) -> ModelResult:
    """Train a fully connected baseline of ``width`` and record how close it came to the target."""
    init, shuffle = _generators(config.seed)
    model = build(
        dataset.n_features, width, dataset.n_classes, bias_bound=config.bias_bound, generator=init
    )
    result = fit(
        name,
        model,
        (split.x_train, split.y_train),
        config,
        shuffle,
        validation=(split.x_val, split.y_val),
        test=(dataset.x_test, dataset.y_test),
        callbacks=callbacks,
        state=state,
    )
    result.extra.update(
        {
            "hidden": width.hidden,
            "partial_inputs": width.partial_inputs,
            "param_gap": round((result.params - target_params) / target_params, 6),
        }
    )
    return result


def train_rule(
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    rule: TopologyRule,
    callbacks: Sequence[Callback] = (),
    *,
    state: FitState | None = None,
) -> ModelResult:
    """A FreeNet trained by :func:`fit` with ``rule``, from FreeEvolve's initial weights.

    The model starts dense, with the weights FreeEvolve's model of the same seed starts from,
    and its samples come in the same order; only the rule differs. The result is named after
    the rule; ``extra`` holds the chosen model's ``edges``, ``density`` and the ``rounds`` taken.
    ``callbacks`` and ``state`` are passed to :func:`fit`.
    """
    init, shuffle = _generators(config.seed)
    model = FreeNet(
        dataset.n_features,
        config.n_neurons,
        dataset.n_classes,
        bias_bound=config.bias_bound,
        generator=init,
    )
    result = fit(
        rule.name,
        model,
        (split.x_train, split.y_train),
        config,
        shuffle,
        validation=(split.x_val, split.y_val),
        test=(dataset.x_test, dataset.y_test),
        rule=rule,
        callbacks=callbacks,
        state=state,
    )
    result.extra.update(
        {
            "edges": model.n_edges,
            "density": round(graph.density(model.mask), 6),
            "rounds": len(result.rounds),
        }
    )
    return result


@dataclass(frozen=True)
class Reference:
    """What the ablation's models take from FreeEvolve's run with the same dataset, k and seed.

    Attributes
    ----------
    params : int
        Effective parameters of the FreeEvolve model chosen on validation (FCNN, FCNN2).
    edges : int
        Its edge count (the budget of SET and RigL).
    round_edges : tuple of int
        The edge count after each of its rounds (the targets of random and magnitude).
    """

    params: int
    edges: int
    round_edges: tuple[int, ...]

    @classmethod
    def of(cls, freeevolve: ModelResult) -> Reference:
        """The reference of a FreeEvolve result."""
        return cls(
            params=int(freeevolve.params),
            edges=int(freeevolve.extra["edges"]),
            round_edges=tuple(int(record.edges) for record in freeevolve.rounds),
        )


# The ablation's models besides FreeEvolve and its FCNN, in the order they are trained.
ABLATION_MODELS = ("dense", "random", "magnitude", "set", "rigl", "fcnn2")


def model_rule(
    name: str, config: TrainConfig, reference: Reference, *, density: float | None = None
) -> TopologyRule:
    """The topology rule of the FreeNet-based model ``name``, sized from ``reference``.

    Parameters
    ----------
    name : {"freeevolve", "dense", "random", "magnitude", "set", "rigl"}
        The model.
    config : TrainConfig
        FreeEvolve's epsilon, patience and re-add mode (random and magnitude re-add the same way).
    reference : Reference
        FreeEvolve's run with the same dataset, k and seed.
    density : float, optional
        SET's and RigL's budget as a fraction of ``k(k-1)/2``, instead of ``reference.edges``.

    Raises
    ------
    ConfigError
        For a name that is no FreeNet-based model.
    """
    readd = as_readd(config.readd)  # checked by TrainConfig.validate already
    budget: dict[str, Any] = (
        {"density": density} if density is not None else {"edges": reference.edges}
    )
    if name == "freeevolve":
        return FreeEvolveRule(config.epsilon, patience=config.patience, readd=readd)
    if name == "dense":
        return DenseRule()
    if name == "random":
        return RandomRule(reference.round_edges, readd=readd)
    if name == "magnitude":
        return MagnitudeRule(reference.round_edges, readd=readd)
    if name == "set":
        return SETRule(**budget)
    if name == "rigl":
        return RigLRule(**budget)
    raise ConfigError(f"{name!r} is not a FreeNet-based model")


def train_model(
    name: str,
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    reference: Reference,
    callbacks: Sequence[Callback] = (),
    *,
    density: float | None = None,
    state: FitState | None = None,
) -> ModelResult:
    """One of the ablation's models (:data:`ABLATION_MODELS`), sized from FreeEvolve's run.

    Parameters
    ----------
    name : str
        ``"dense"``, ``"random"``, ``"magnitude"``, ``"set"``, ``"rigl"`` (a FreeNet trained with
        that rule, :func:`train_rule`) or ``"fcnn2"`` (:func:`train_fcnn2`).
    split : Split
        The validation split FreeEvolve's run used.
    reference : Reference
        FreeEvolve's run with the same dataset, k and seed.
    density : float, optional
        SET's and RigL's budget as a fraction of ``k(k-1)/2`` instead of FreeEvolve's edges.
    callbacks, state
        Passed to :func:`fit`.

    Raises
    ------
    TrainingFailed
        If the model diverges.
    ConfigError
        For an unknown name.
    """
    if name == "fcnn2":
        return train_fcnn2(dataset, split, config, reference.params, callbacks, state=state)
    if name == "fcnn":
        return train_fcnn(dataset, split, config, reference.params, callbacks, state=state)
    rule = model_rule(name, config, reference, density=density)
    return train_rule(dataset, split, config, rule, callbacks, state=state)


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
    """The FreeEvolve result saved by :func:`result_state`, its model rebuilt."""
    init, _ = _generators(config.seed)
    model = FreeNet(dataset.n_features, config.n_neurons, dataset.n_classes, generator=init)
    try:
        load_weights(model, check_result(data)["model"])
        if data["params"] != model.effective_params():
            raise ValueError(f"it has {model.effective_params()} parameters, not {data['params']}")
        epochs = [EpochRecord(**record) for record in data["epochs"]]
        rounds = [RoundRecord(**record) for record in data["rounds"]]
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(
            f"the checkpoint's FreeEvolve model does not fit: {one_line(error)}"
        ) from None
    fields = ("test_accuracy", "val_accuracy", "best_epoch", "params", "seconds")
    numbers = {key: data[key] for key in fields}
    masks = [] if data["masks"] is None else [mask.clone() for mask in data["masks"]]
    return ModelResult(
        "freeevolve",
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
    """FreeEvolve, then the FCNN matched to its effective parameters, on the same split.

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
    split = validation_split(dataset.x_train, dataset.y_train, config.val_fraction, config.seed)
    resume = resume or {"phase": "freeevolve", "fit": None, "freeevolve": None}
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
