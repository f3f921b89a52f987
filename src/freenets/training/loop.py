"""The one training loop (paper, Algorithm 1), with pluggable topology rules and callbacks.

Algorithm 1 alternates weight training with a change of the graph. :func:`fit` trains the weights
with Adam, and a :class:`~freenets.rules.base.TopologyRule` says how the graph changes: FreeEvolve
(Algorithm 2) after each round of ``epochs_per_round`` epochs until the graph has converged, or
any other rule.

Every model is scored in the same order: an epoch trains, then it is scored (validation and
test), then the round that ends with it changes the graph, and only if another epoch follows:
the graph a round proposes is trained before it is scored, and nothing changes after the last
epoch (as SET's reference does). A rule that acts on a batch instead (RigL) does so in place of
that batch's optimiser step, and each such change is recorded as a round too. Every proposal
goes through :func:`~freenets.training.topology.apply_mask` with the loop's optimiser. What differs between the command line, the sweeps and the scikit-learn
estimators (checkpoints, stops, early stopping, progress bars) hooks in as a :class:`Callback` at
three named points, after a batch, after a round and after an epoch, as in skorch.

With validation data, the model returned holds the weights (and graph) of the epoch with the best
validation score, and its test score is the one measured at that epoch; without, the last epoch's.
:func:`fit` goes on from a :class:`~freenets.training.state.FitState` to the same result, bit
for bit, as a run never stopped. A loss that turns NaN or infinite, or explodes, ends training with
:class:`TrainingFailed`.
"""

# One concept, kept whole: the state of one training (Loop) and every step that reads or writes
# it: batch, round, epoch, snapshot and restore; Callback is the interface it calls, fit its entry.

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import torch
from torch import nn

from freenets.errors import CheckpointError, Interrupted, TrainingFailed
from freenets.model import FreeNet
from freenets.rules.base import BatchInfo, Proposal, RoundInfo, TopologyChange, TopologyRule
from freenets.rules.selection import graph_of
from freenets.training.checkpoint import one_line
from freenets.training.config import TrainConfig
from freenets.training.optim import default_optimizer, learning_rate, load_optimizer, load_weights
from freenets.training.records import EpochRecord, ModelResult
from freenets.training.state import FitState
from freenets.training.tasks import CLASSIFICATION, Task
from freenets.training.topology import apply_proposal, check_optimizer

# The rule's generator is seeded apart from the initialisation's (seed) and the shuffle's (+7919).
RULE_SEED_OFFSET = 104_729


def seeded_rule_generator(seed: int) -> torch.Generator:
    """The topology rule's generator of a run with ``seed``, apart from its other two streams."""
    return torch.Generator().manual_seed(seed + RULE_SEED_OFFSET)


Pair = tuple[torch.Tensor, torch.Tensor]


class Callback:
    """Code that :func:`fit` runs at its named points; every default does nothing.

    A callback reads the :class:`Loop`; it may end training after an epoch (``loop.stop =
    True``) or stop it at once by raising :class:`~freenets.errors.Interrupted`, after which every
    callback's :meth:`on_interrupt` runs and the exception goes on to the caller.
    """

    def on_batch_end(self, loop: Loop) -> None:
        """After each optimiser step and the rule's ``after_batch``."""

    def on_round_end(self, loop: Loop, record: TopologyChange) -> None:
        """After each topology change, of a round or of a batch (the graph is the new one)."""

    def on_epoch_end(self, loop: Loop, record: EpochRecord) -> None:
        """After each epoch, once it is scored and the best model chosen."""

    def on_interrupt(self, loop: Loop) -> None:
        """When a callback has raised Interrupted (the state is that of the last batch)."""


class Loop:
    """The state of one :func:`fit` call, as its callbacks see it.

    Attributes
    ----------
    name : str
        The model's name in records and messages.
    model, optimizer, config, rule
        What trains, with what, and the topology rule (or ``None``).
    epoch : int
        Epochs complete.
    position : int
        Samples of the current epoch trained so far (0 between epochs).
    n_train : int
        Training samples per epoch.
    steps : int
        Batches trained in this training (a batch whose step a rule replaced included).
    skipped_steps : int
        Batches whose optimiser step a rule's change replaced (RigL's update steps).
    epochs, rounds : list
        The :class:`EpochRecord` and :class:`TopologyChange` so far (a rule's changes on batches
        are rounds with a ``step``).
    masks : list of torch.Tensor
        The graph before the first change, then after each round (with a rule only).
    owed_round : bool
        Whether the round that ended with the last epoch trained is still to be taken: it is
        taken when the next epoch starts, so that no change follows the last one.
    best : tuple of (float, int, float)
        Validation score, epoch and test score of the best epoch so far; ``(-1.0, 0, 0.0)``
        before the first (a placeholder, not a bound: the first scored epoch always replaces
        it), and throughout without validation data.
    stop : bool
        Set by a callback to end training after the current epoch (early stopping).
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        train: Pair,
        config: TrainConfig,
        shuffle: torch.Generator,
        *,
        validation: Pair | None,
        test: Pair | None,
        task: Task,
        rule: TopologyRule | None,
        rule_generator: torch.Generator | None,
        optimizer: torch.optim.Optimizer | None,
        callbacks: Sequence[Callback],
    ) -> None:
        self.name, self.model, self.config, self.rule = name, model, config, rule
        self.x_train, self.y_train = train
        self.validation, self.test, self.task = validation, test, task
        self.shuffle = shuffle
        if rule_generator is None:
            rule_generator = seeded_rule_generator(config.seed)
        self.rule_generator = rule_generator
        self.optimizer = optimizer if optimizer is not None else default_optimizer(model, config)
        if rule is not None:
            check_optimizer(model, self.optimizer)
        self.callbacks = list(callbacks)
        self.n_train = int(self.x_train.shape[0])
        self.batches = math.ceil(self.n_train / config.optim.batch_size)
        self.epoch, self.position, self.steps, self.skipped_steps = 0, 0, 0, 0
        self.owed_round = False
        self.order: torch.Tensor | None = None
        self.loss_total, self.earlier = 0.0, 0.0
        self.epochs: list[EpochRecord] = []
        self.rounds: list[TopologyChange] = []
        self.masks: list[torch.Tensor] = []
        self.best: tuple[float, int, float] = (-1.0, 0, 0.0)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stop = False
        # The scheduled step size's multiple: lowered on a plateau by a callback
        # (EarlyStopping with ``reduce``, the estimators' "adaptive" schedule).
        self.lr_factor = 1.0
        self.started = time.perf_counter()
        self.penalty: Callable[[], torch.Tensor] | None = None
        if isinstance(model, FreeNet) and config.optim.weight_decay > 0:
            # L2 on active edges only: the gradient of masked weights stays exactly zero.
            def penalty() -> torch.Tensor:
                return 0.5 * config.optim.weight_decay * (model.weight * model.mask).pow(2).sum()

            self.penalty = penalty

    # ------------------------------------------------------------------ state

    def start(self, warm_start: bool) -> None:
        """A fresh run: the rule's initial graph, the first mask.

        With ``warm_start`` the model goes on from an earlier call, whose last epoch's round
        was left to the next epoch: it is taken before this call's first epoch.
        """
        if self.rule is None:
            return
        if warm_start:
            # The earlier call's epochs are not counted here: its last epoch is taken to end a
            # round, as each of partial_fit's one-epoch calls does (the estimators' rounds are
            # one epoch long). So a round is owed unless the rule has converged.
            self.owed_round = self._round_due(self.config.topology.epochs_per_round)
        else:
            proposal = self.rule.initial_mask(self.model, self.rule_generator)
            if proposal is not None:
                self._apply(proposal)
        self.masks = [graph_of(self.model)[0].detach().cpu().clone()]

    def snapshot(self) -> FitState:
        """Everything needed to go on from here (see :class:`FitState`)."""
        rule = self.rule
        return FitState(
            epoch=self.epoch,
            position=self.position,
            order=self.order if self.position else None,
            loss_total=self.loss_total,
            skipped_steps=self.skipped_steps,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            shuffle=self.shuffle.get_state(),
            rule=rule.state_dict() if rule is not None else None,
            rule_generator=self.rule_generator.get_state() if rule is not None else None,
            best_val=self.best[0],
            best_epoch=self.best[1],
            best_test=self.best[2],
            best_model=self.best_state,
            epochs=[asdict(record) for record in self.epochs],
            rounds=[asdict(record) for record in self.rounds],
            masks=torch.stack(self.masks) if self.masks else None,
            seconds=self.earlier + time.perf_counter() - self.started,
        )

    def restore(self, state: FitState) -> None:
        """Go on from ``state``; CheckpointError where it does not fit this training."""
        try:
            load_weights(self.model, state.model)
            if state.best_model is not None:
                load_weights(copy.deepcopy(self.model), state.best_model)
            elif self.validation is not None and state.epoch > 0:
                raise ValueError("the best model on validation is missing")
            self.steps = state.epoch * self.batches + math.ceil(
                state.position / self.config.optim.batch_size
            )
            if state.skipped_steps > self.steps:
                raise ValueError("it skips more optimiser steps than it trained batches")
            self.skipped_steps = state.skipped_steps
            load_optimizer(self.optimizer, state.optimizer, self.steps - self.skipped_steps)
            self.shuffle.set_state(state.shuffle)
            self.epochs = [EpochRecord(**record) for record in state.epochs]
            self.rounds = [TopologyChange(**record) for record in state.rounds]
            if (self.rule is None) != (state.rule is None):
                held = "no rule's state" if state.rule is None else "a topology rule's state"
                has = f"the rule {self.rule.name!r}" if self.rule is not None else "no rule"
                raise ValueError(f"it holds {held}, and this training has {has}")
            if self.rule is not None:
                self.rule.load_state_dict(state.rule or {})
                if state.rule_generator is not None:
                    self.rule_generator.set_state(state.rule_generator)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise CheckpointError(
                f"the checkpoint does not fit the {self.name} model: {one_line(error)}"
            ) from None
        if state.masks is not None:
            self.masks = [mask.clone() for mask in state.masks]
        elif self.rule is not None:
            self.masks = [graph_of(self.model)[0].detach().cpu().clone()]
        self.best, self.best_state = (
            (state.best_val, state.best_epoch, state.best_test),
            (state.best_model),
        )
        self.epoch, self.position, self.order = state.epoch, state.position, state.order
        self.loss_total, self.earlier = state.loss_total, state.seconds
        # A state between epochs has not taken the round of the epoch before; within an epoch,
        # that round came before its first batch.
        self.owed_round = self.position == 0 and self._round_due(self.epoch)

    # ------------------------------------------------------------------ training

    def run(self) -> ModelResult:
        """Train until ``config.optim.epochs`` epochs are done or a callback sets ``stop``."""
        try:
            while self.epoch < self.config.optim.epochs and not self.stop:
                self._epoch()
        except Interrupted:
            for callback in self.callbacks:
                callback.on_interrupt(self)
            raise
        return self._result()

    def _round_due(self, epoch: int) -> bool:
        """Whether the rule changes the graph at the end of ``epoch`` (before the next one)."""
        rule = self.rule
        return (
            rule is not None
            # A rule that acts only on batches (RigL) has no rounds to record.
            and type(rule).after_round is not TopologyRule.after_round
            and epoch > 0
            and epoch % self.config.topology.epochs_per_round == 0
            and not rule.converged
        )

    def _epoch(self) -> None:
        epoch = self.epoch + 1
        epoch_start = time.perf_counter()
        if self.owed_round:  # the round that ended with the last epoch: another one follows
            self.owed_round = False
            self._round(self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, epoch) * self.lr_factor
        if self.order is None:
            self.order = torch.randperm(self.n_train, generator=self.shuffle)
            self.loss_total = 0.0
        limit = self.task.loss_bound(self.y_train)
        self.model.train()
        while self.position < self.n_train:
            index = self.order[self.position : self.position + self.config.optim.batch_size]
            index = index.to(self.x_train.device)
            # index_select copies the batch's rows three to four times faster than x[index]
            # (100 against 28 us for 128 rows of 784 floats, one thread); the same values.
            x = torch.index_select(self.x_train, 0, index)
            y = torch.index_select(self.y_train, 0, index)
            self.steps += 1
            loss = self._train_batch(x, y, epoch)
            if not loss <= limit:  # NaN compares False too
                batch = self.position // self.config.optim.batch_size + 1
                raise TrainingFailed(
                    self.name,
                    f"the training loss became {loss:.4g} at epoch {epoch}, "
                    f"batch {batch} (a smaller learning rate may help)",
                )
            self.loss_total += loss * index.numel()
            self.position += index.numel()
            for callback in self.callbacks:
                callback.on_batch_end(self)
        loss = self.loss_total / self.n_train
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingFailed(self.name, f"a weight became NaN or infinite in epoch {epoch}")
        score = self.task.score
        val = score(self.model, *self.validation) if self.validation is not None else None
        test = score(self.model, *self.test) if self.test is not None else None
        edges = self.model.n_edges if isinstance(self.model, FreeNet) else None
        seconds = round(time.perf_counter() - epoch_start, 4)
        record = EpochRecord(epoch, loss, val, test, seconds, edges)
        self.epochs.append(record)
        # The first scored epoch is the best so far whatever its score: R^2 can be below -1.
        # A rule may rule out graphs as the result (one not yet at its budget): such a best
        # gives way to the first graph it accepts, whatever the scores.
        if val is not None and (self.best_state is None or self._better(val)):
            self.best = (val, epoch, test if test is not None else 0.0)
            self.best_state = copy.deepcopy(self.model.state_dict())
        self.epoch, self.position, self.order = epoch, 0, None
        self.owed_round = self._round_due(epoch)
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)

    def _train_batch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One batch: its gradient, then the optimiser step or a rule's change in its place.

        Returns the batch's loss (the penalty aside).
        """
        loss = self.task.loss(self.model(x), y)
        objective = loss + self.penalty() if self.penalty is not None else loss
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        rule = self.rule
        if rule is None:
            self.optimizer.step()
            return float(loss.detach())
        total = self.config.optim.epochs * self.batches
        info = BatchInfo(self.steps, total, x, y, self.task.loss, self.rule_generator)
        start = time.perf_counter()
        proposal = rule.instead_of_step(self.model, info)
        if proposal is not None:  # the mask moves instead of the weights (RigL)
            self.skipped_steps += 1
            self._record(self._apply(proposal), epoch, start, step=self.steps)
        else:
            self.optimizer.step()
            start = time.perf_counter()
            proposal = rule.after_batch(self.model, info)
            if proposal is not None:  # most batches: nothing to apply, not even a count
                self._record(self._apply(proposal), epoch, start, step=self.steps)
        return float(loss.detach())

    def _apply(self, proposal: torch.Tensor | Proposal | None) -> TopologyChange:
        """Write a rule's proposal into the model, with the rule's way of starting new edges."""
        assert self.rule is not None
        return apply_proposal(self.model, proposal, self.optimizer, self.rule, self.rule_generator)

    def _better(self, val: float) -> bool:
        """Whether this epoch's model, scored ``val``, replaces the best so far."""
        if self.rule is None or not isinstance(self.model, FreeNet):
            return val > self.best[0]
        assert self.best_state is not None
        if not self.rule.selectable(self.model.mask):
            return False
        return not self.rule.selectable(self.best_state["mask"]) or val > self.best[0]

    def _round(self, epoch: int) -> None:
        assert self.rule is not None
        start = time.perf_counter()
        info = RoundInfo(
            len(self.rounds), epoch, self.x_train, self.rule_generator, self.config.optim.epochs
        )
        self._record(self._apply(self.rule.after_round(self.model, info)), epoch, start)

    def _record(
        self, change: TopologyChange, epoch: int, start: float, *, step: int | None = None
    ) -> None:
        """Keep a change's record and the new graph, and tell the callbacks."""
        assert self.rule is not None
        # A rule may keep the values behind its decisions (FreeEvolve: NCIM and NCAM, Figure 7).
        values_of = getattr(self.rule, "round_values", None)
        values = values_of() if callable(values_of) and step is None else {}
        record = replace(
            change,
            round=len(self.rounds) + 1,
            epoch=epoch,
            step=step,
            prune_values=list(values.get("prune_values", [])),
            aug_values=list(values.get("aug_values", [])),
            seconds=round(time.perf_counter() - start, 4),
        )
        self.rounds.append(record)
        self.masks.append(graph_of(self.model)[0].detach().cpu().clone())
        for callback in self.callbacks:
            callback.on_round_end(self, record)

    def _result(self) -> ModelResult:
        if self.validation is not None:
            if self.best_state is None:
                raise CheckpointError(f"the {self.name} model has no best epoch to return")
            self.model.load_state_dict(self.best_state)
            val: float | None = self.best[0]
            best_epoch, test = self.best[1], self.best[2] if self.test is not None else None
        else:
            last = self.epochs[-1] if self.epochs else None
            val, best_epoch = None, self.epoch
            test = last.test_accuracy if last is not None else None
        # FreeNet and FCNN count only the parameters in use (active edges, inputs read).
        effective = getattr(self.model, "effective_params", None)
        params = effective() if effective else sum(p.numel() for p in self.model.parameters())
        return ModelResult(
            name=self.name,
            model=self.model,
            test_accuracy=test,
            val_accuracy=val,
            best_epoch=best_epoch,
            params=params,
            seconds=self.earlier + time.perf_counter() - self.started,
            epochs=self.epochs,
            rounds=self.rounds,
            masks=self.masks,
            extra={"converged": self.rule.converged} if self.rule is not None else {},
        )


def fit(
    name: str,
    model: nn.Module,
    train: Pair,
    config: TrainConfig,
    shuffle: torch.Generator,
    *,
    validation: Pair | None = None,
    test: Pair | None = None,
    task: Task = CLASSIFICATION,
    rule: TopologyRule | None = None,
    rule_generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    warm_start: bool = False,
    callbacks: Sequence[Callback] = (),
    state: FitState | None = None,
) -> ModelResult:
    """Train ``model`` for ``config.optim.epochs`` epochs, changing its graph by ``rule`` if given.

    Parameters
    ----------
    name : str
        The model's name in records and messages (``"freeevolve"``, ``"fcnn"``).
    model : nn.Module
        What to train; a :class:`~freenets.FreeNet` when ``rule`` is given.
    train : (x, y)
        Training inputs and targets (class indices, or ``(n, outputs)`` floats for regression).
    config : TrainConfig
        Epochs, batch size, step size and its schedule, weight decay, epochs per round, seed.
    shuffle : torch.Generator
        Draws each epoch's order of the samples.
    validation, test : (x, y), optional
        Scored after every epoch. With validation, the model returned is the best epoch's.
    task : Task, default CLASSIFICATION
        Loss and score: :data:`CLASSIFICATION` (cross-entropy, accuracy) or :data:`REGRESSION`.
    rule : TopologyRule, optional
        Asked for the initial graph once (a fresh run), on every batch (before and after its
        optimiser step), and after every ``config.topology.epochs_per_round`` epochs until it has
        converged, once the epoch is scored and only if another epoch follows.
    rule_generator : torch.Generator, optional
        The rule's randomness; by default seeded from ``config.seed``.
    optimizer : torch.optim.Optimizer, optional
        By default Adam as :func:`~freenets.training.optim.default_optimizer` builds it.
    warm_start : bool, default False
        The model, optimiser and rule go on from an earlier call (``partial_fit``): the rule's
        initial graph is not asked for again, and the round of the earlier call's last epoch
        (left for an epoch to follow) is taken before this call's first.
    callbacks : sequence of Callback
        Run after each batch, round and epoch (checkpoints, stops, early stopping, progress).
    state : FitState, optional
        Where an earlier call stopped; training goes on from there with the same result, bit
        for bit, as if it had never stopped.

    Raises
    ------
    TrainingFailed
        If a batch loss is NaN, infinite or (classification) over ``DIVERGENCE_FACTOR`` times
        ln(classes), or a parameter stops being finite.
    Interrupted
        If a callback asked to stop (:class:`~freenets.training.callbacks.StopWhenAsked`).
    CheckpointError
        If ``state`` does not fit this training.
    """
    loop = Loop(
        name,
        model,
        train,
        config,
        shuffle,
        validation=validation,
        test=test,
        task=task,
        rule=rule,
        rule_generator=rule_generator,
        optimizer=optimizer,
        callbacks=callbacks,
    )
    if state is not None:
        loop.restore(state)
    else:
        loop.start(warm_start)
    return loop.run()
