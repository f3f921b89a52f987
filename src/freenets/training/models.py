"""Training one model of a run on its validation split, each from the run's seed.

FreeEvolve (:func:`train_freeevolve`: Algorithm 1 on a dense FreeNet, with FreeEvolve as the
topology rule of :func:`freenets.training.loop.fit`,
:class:`~freenets.rules.freeevolve.FreeEvolveRule`) and the one-hidden-layer FCNN with as many
parameters (:func:`train_fcnn`) are the two models of ``freenets train``
(:func:`freenets.training.train.run_pair`); :func:`train_model` trains any model by its name.

The ablation's other models (:func:`train_model`) train on the same split, in the same order of
samples and from the same initial weights, each sized from FreeEvolve's run (a
:class:`Reference`): the dense FreeNet (no topology change), the random and magnitude controls
(FreeEvolve's edges pruned and added in each round), SET and RigL (the chosen FreeEvolve model's edge
count as their budget), and the FCNN2 baseline (two hidden layers, FreeEvolve's parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from freenets import graph
from freenets.baselines import FCNN, FCNN2, matching_width, matching_width2
from freenets.data import Dataset, Split
from freenets.errors import ConfigError
from freenets.model import FreeNet
from freenets.rules import RULES, make_rule
from freenets.rules.base import TopologyRule
from freenets.rules.freeevolve import sparse_step
from freenets.stats import firing
from freenets.training.config import TrainConfig, resolve_device
from freenets.training.loop import Callback, fit
from freenets.training.records import ModelResult
from freenets.training.state import FitState

__all__ = [
    "Reference",
    "generators",
    "model_rule",
    "train_fcnn",
    "train_fcnn2",
    "train_freeevolve",
    "train_model",
    "train_rule",
]


def placed(
    config: TrainConfig, pair: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pair`` (inputs, targets) on the run's device (``config.device``)."""
    device = resolve_device(config.device)
    return pair[0].to(device), pair[1].to(device)


def generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Independent generators for initialisation and for shuffling, both fixed by ``seed``."""
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 7919)


def initial_freenet(dataset: Dataset, config: TrainConfig) -> tuple[FreeNet, torch.Generator]:
    """The dense FreeNet a run's FreeNets start from, and the generator of their sample order.

    Its size comes from the data and ``config`` (``bias_bound`` included), its weights from
    ``config.seed``: every FreeNet of one dataset, k and seed starts from the same weights, so
    that the rules compared differ in nothing else.
    """
    init, shuffle = generators(config.seed)
    model = FreeNet(
        dataset.n_features,
        config.model.n_neurons,
        dataset.n_classes,
        bias_bound=config.model.bias_bound,
        generator=init,
        sparse_grad=config.model.sparse_grad,
    )
    return model, shuffle


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
    model, shuffle = initial_freenet(dataset, config)
    rule = model_rule("freeevolve", config, Reference(params=0, edges=0, round_changes=()))
    model.to(resolve_device(config.device))
    result = fit(
        "freeevolve",
        model,
        placed(config, (split.x_train, split.y_train)),
        config,
        shuffle,
        validation=placed(config, (split.x_val, split.y_val)),
        test=placed(config, (dataset.x_test, dataset.y_test)),
        rule=rule,
        callbacks=callbacks,
        state=state,
    )
    model.cpu()  # results are kept and saved on the CPU, whatever device trained them
    # Theorem 2 at the chosen model: Aug and not Prune must already be edges at a fixed point,
    # that is, FreeEvolve would add nothing (what it adds is never pruned).
    step = sparse_step(model.mask, firing(model, split.x_train), config.topology.epsilon, 0)
    converged_round = next((r.round for r in result.rounds if r.added == 0 and r.pruned == 0), None)
    result.extra.update(
        {
            "edges": model.n_edges,
            "density": round(graph.density(model.mask), 6),
            "rounds": len(result.rounds),
            "first_unchanged_round": converged_round,
            "theorem2_holds": step[1].added == 0,
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
    init, shuffle = generators(config.seed)
    model = build(
        dataset.n_features,
        width,
        dataset.n_classes,
        bias_bound=config.model.bias_bound,
        generator=init,
    )
    model.to(resolve_device(config.device))
    result = fit(
        name,
        model,
        placed(config, (split.x_train, split.y_train)),
        config,
        shuffle,
        validation=placed(config, (split.x_val, split.y_val)),
        test=placed(config, (dataset.x_test, dataset.y_test)),
        callbacks=callbacks,
        state=state,
    )
    model.cpu()  # results are kept and saved on the CPU, whatever device trained them
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
    model, shuffle = initial_freenet(dataset, config)
    model.to(resolve_device(config.device))
    result = fit(
        rule.name,
        model,
        placed(config, (split.x_train, split.y_train)),
        config,
        shuffle,
        validation=placed(config, (split.x_val, split.y_val)),
        test=placed(config, (dataset.x_test, dataset.y_test)),
        rule=rule,
        callbacks=callbacks,
        state=state,
    )
    model.cpu()  # results are kept and saved on the CPU, whatever device trained them
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
    round_changes : tuple of (int, int)
        The edges pruned and added in each of its rounds (what random and magnitude follow).
    """

    params: int
    edges: int
    round_changes: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, freeevolve: ModelResult) -> Reference:
        """The reference of a FreeEvolve result."""
        return cls(
            params=int(freeevolve.params),
            edges=int(freeevolve.extra["edges"]),
            round_changes=tuple(
                (int(record.pruned), int(record.added)) for record in freeevolve.rounds
            ),
        )


def model_rule(
    name: str, config: TrainConfig, reference: Reference, *, density: float | None = None
) -> TopologyRule:
    """The topology rule of the FreeNet-based model ``name``, from the registry.

    Each field of the rule's ``config_type`` comes from ``config`` by its name (``stop`` from
    ``rule_stop``), but for what a FreeEvolve run sizes: the budget (``density``, else
    ``config.topology.density`` or ``config.topology.edges``), else what FreeEvolve's run gives: ``changes`` for
    random and magnitude (its rounds), ``reference.edges`` for SET and RigL.

    Parameters
    ----------
    name : str
        A name of :data:`freenets.rules.RULES`.
    config : TrainConfig
        The run's settings.
    reference : Reference
        FreeEvolve's run with the same dataset, k and seed (unused by the rules that need none).
    density : float, optional
        The budget of SET, RigL, random and magnitude as a fraction of ``k(k-1)/2``, before
        ``config``'s.

    Raises
    ------
    ConfigError
        For a name that is no rule, or a parameter out of range.
    """
    if name not in RULES:
        raise ConfigError(f"{name!r} is not a FreeNet-based model")
    config_type = RULES[name].config_type
    options: dict[str, Any] = {}
    for item in fields(config_type) if config_type is not None else ():
        if item.name == "changes":
            options["changes"] = reference.round_changes
        elif item.name == "stop":
            options["stop"] = config.topology.rule_stop
        elif hasattr(config.topology, item.name) and item.name not in ("edges", "density"):
            options[item.name] = getattr(config.topology, item.name)
        # Any other parameter (a user's rule may have its own) keeps the rule's default.
    if config_type is not None and "density" in {item.name for item in fields(config_type)}:
        if density is not None or config.topology.density is not None:
            options["density"] = density if density is not None else config.topology.density
        elif config.topology.edges is not None:
            options["edges"] = config.topology.edges
        elif "changes" not in options:  # SET and RigL: FreeEvolve's edges, when no budget
            options["edges"] = reference.edges
        if "changes" in options and ("density" in options or "edges" in options):
            del options["changes"]  # random and magnitude at a budget: the field's baselines
    return make_rule(name, **options)


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
    """Model ``name`` of a run: FreeEvolve, a FreeNet under another rule, or a baseline sized from
    FreeEvolve's run.

    Parameters
    ----------
    name : str
        ``"freeevolve"`` (:func:`train_freeevolve`), ``"fcnn"`` or ``"fcnn2"``
        (:func:`train_fcnn`, :func:`train_fcnn2`: ``reference.params`` parameters), or another
        name of :data:`freenets.rules.RULES` (a FreeNet trained with that rule,
        :func:`train_rule`; the ablation's ``"dense"``, ``"random"``, ``"magnitude"``,
        ``"set"``, ``"rigl"``, or a user's registered rule).
    split : Split
        The validation split FreeEvolve's run used.
    reference : Reference
        FreeEvolve's run with the same dataset, k and seed.
    density : float, optional
        The budget of SET, RigL, random and magnitude as a fraction of ``k(k-1)/2``, instead of
        what FreeEvolve's run sizes (:func:`model_rule`).
    callbacks, state
        Passed to :func:`fit`.

    Raises
    ------
    TrainingFailed
        If the model diverges.
    ConfigError
        For an unknown name.
    """
    if name == "freeevolve":
        return train_freeevolve(dataset, split, config, callbacks, state=state)
    if name == "fcnn2":
        return train_fcnn2(dataset, split, config, reference.params, callbacks, state=state)
    if name == "fcnn":
        return train_fcnn(dataset, split, config, reference.params, callbacks, state=state)
    rule = model_rule(name, config, reference, density=density)
    return train_rule(dataset, split, config, rule, callbacks, state=state)
