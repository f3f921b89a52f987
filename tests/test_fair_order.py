"""Every rule scored the same way, and each as its source defines it, through ``fit``.

An epoch trains, is scored, and only then does the round that ends with it change the graph, if
another epoch follows; RigL's updates take an optimiser step's place and use the gradient of the
weights that step would have moved; the random and magnitude controls prune and add what
FreeEvolve pruned and added, round by round.
"""

from __future__ import annotations

import copy

import pytest
import torch
from toy_runs import toy_dataset

from freenets import FreeNet, graph
from freenets.data import validation_split
from freenets.rules.base import TopologyRule
from freenets.rules.gradient import dense_gradient
from freenets.rules.sparse import RigLRule, SETRule, rigl_drop_fraction, rigl_step
from freenets.training.config import TrainConfig
from freenets.training.loop import Callback, fit
from freenets.training.models import Reference, train_freeevolve, train_model
from freenets.training.tasks import CLASSIFICATION

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class EmptyingRule(TopologyRule):
    """Removes every edge and zeroes the decoder at each round: a change that moves the score."""

    name = "emptying"

    def __init__(self) -> None:
        self.rounds_after: list[int] = []

    def after_round(self, model, info):
        self.rounds_after.append(info.epoch)
        with torch.no_grad():  # what no rule may do; here it makes any post-round score chance
            model.decoder.weight.zero_()
            model.decoder.bias.zero_()
        return torch.zeros_like(model.mask)


class Scores(Callback):
    """The score and graph of the model as each epoch ends, and the order of the events."""

    def __init__(self, validation) -> None:
        self.validation = validation
        self.events: list[tuple] = []

    def on_epoch_end(self, loop, record):
        score = CLASSIFICATION.score(loop.model, *self.validation)
        self.events.append(("epoch", record.epoch, record.val_accuracy, score, record.edges))

    def on_round_end(self, loop, record):
        self.events.append(("round", record.epoch, record.step))


def toy_fit(rule, *, epochs=4, callbacks=(), batch_size=32, seed=3, k=8):
    data = toy_dataset()
    split = validation_split(data.x_train, data.y_train, 0.2, 0)
    model = FreeNet(6, k, 3, generator=torch.Generator().manual_seed(seed))
    config = TrainConfig.of(
        n_neurons=k, epochs=epochs, batch_size=batch_size, learning_rate=0.02, seed=seed
    )
    result = fit(
        "toy",
        model,
        (split.x_train, split.y_train),
        config,
        torch.Generator().manual_seed(1),
        validation=(split.x_val, split.y_val),
        rule=rule,
        callbacks=callbacks,
    )
    return result, split


def test_each_epoch_is_scored_before_its_round_and_the_last_one_has_none():
    rule = EmptyingRule()
    data = toy_dataset()
    validation = validation_split(data.x_train, data.y_train, 0.2, 0)
    scores = Scores((validation.x_val, validation.y_val))
    result, _ = toy_fit(rule, epochs=4, callbacks=[scores])
    # The epochs trained on the dense graph are scored on it, before the round empties it.
    dense = graph.n_edges(graph.dense_mask(8))
    assert scores.events[:2] == [
        ("epoch", 1, result.epochs[0].val_accuracy, result.epochs[0].val_accuracy, dense),
        ("round", 1, None),
    ]
    # Scored after the round, every sample would get class 0 (a zero decoder): not what counted.
    chance = float((validation.y_val == 0).float().mean())
    assert result.epochs[0].val_accuracy > chance + 0.2
    for event in scores.events:
        if event[0] == "epoch":
            assert event[2] == event[3]  # the score recorded is that of the graph as it ends
    # A round after epochs 1 to 3, none after the last: 4 epochs, 3 rounds.
    assert rule.rounds_after == [1, 2, 3]
    assert [event[:2] for event in scores.events if event[0] == "round"] == [
        ("round", 1),
        ("round", 2),
        ("round", 3),
    ]
    assert scores.events[-1][:2] == ("epoch", 4)
    # Model selection picks the best scored epoch, with its own graph and weights.
    best = result.epochs[result.best_epoch - 1]
    assert result.val_accuracy == best.val_accuracy and result.model.n_edges == best.edges


def test_set_through_fit_changes_the_graph_between_epochs_only():
    rule = SETRule(density=0.5, zeta=0.3)
    result, _ = toy_fit(rule, epochs=5)
    assert [(r.epoch, r.step) for r in result.rounds] == [(e, None) for e in (1, 2, 3, 4)]
    assert all(r.pruned == r.added > 0 for r in result.rounds)
    # The last epoch trained the graph of the last round and was scored on it: nothing after.
    assert torch.equal(result.masks[-1], result.model.mask) or result.best_epoch < 5
    assert len(result.masks) == 1 + len(result.rounds)


class WatchedRigL(RigLRule):
    """RigL that keeps what it saw at each update: the weights, the batch, its generator."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.seen: list[dict] = []

    def instead_of_step(self, model, info):
        before = {
            "weight": model.weight.detach().clone(),
            "grad": model.weight.grad.detach().clone() if model.weight.grad is not None else None,
            "mask": model.mask.clone(),
            "model": copy.deepcopy(model),
            "generator": info.generator.get_state(),
            "info": info,
        }
        proposal = super().instead_of_step(model, info)
        if proposal is not None:
            self.seen.append({**before, "proposal": proposal.clone()})
        return proposal


class Weights(Callback):
    def __init__(self) -> None:
        self.after_batch: list[torch.Tensor] = []

    def on_batch_end(self, loop):
        self.after_batch.append(loop.model.weight.detach().clone())


def test_rigl_through_fit_updates_instead_of_a_step_with_the_gradient_before_it():
    # 192 training samples, batch 32: 6 batches an epoch, 30 over 5 epochs; updates every 4
    # steps before 75% of them (22.5): steps 4, 8, 12, 16 and 20.
    rule = WatchedRigL(density=0.5, zeta=0.5, delta_t=4)
    weights = Weights()
    result, _ = toy_fit(rule, epochs=5, callbacks=[weights])
    updates = [r for r in result.rounds if r.step is not None]
    assert [r.step for r in updates] == [4, 8, 12, 16, 20]
    assert [r.epoch for r in updates] == [1, 2, 2, 3, 4]
    assert sum(r.added for r in updates) > 0 and all(r.added == r.pruned for r in updates)
    assert len(result.masks) == 1 + len(updates)  # every change recorded, with its graph
    assert rule.converged
    differs = False
    for seen, record in zip(rule.seen, updates, strict=True):
        info, step = seen["info"], record.step
        # The update took the step's place: the weights after that batch are those before it,
        # but where the new edges start at zero.
        grown = seen["proposal"] & ~seen["mask"]
        moved = weights.after_batch[step - 1]
        assert torch.equal(moved[~grown], weights.after_batch[step - 2][~grown])
        assert (moved[grown] == 0).all()
        # The proposal is RigL's step on the weights and the dense gradient before the step.
        fraction = rigl_drop_fraction(step, info.total_steps, 0.5, 0.75)
        model = seen["model"]
        gradient = dense_gradient(model, info.inputs, info.targets, info.loss)
        generator = torch.Generator().set_state(seen["generator"])
        expected = rigl_step(seen["mask"], seen["weight"], gradient, fraction, generator)
        assert torch.equal(seen["proposal"], expected)
        # Had the weights moved first (an SGD step on the batch's gradient), RigL would have
        # chosen otherwise at least once: the test tells the two apart.
        with torch.no_grad():
            model.weight.sub_(0.5 * seen["grad"])
        after = dense_gradient(model, info.inputs, info.targets, info.loss)
        generator = torch.Generator().set_state(seen["generator"])
        other = rigl_step(seen["mask"], model.weight.detach(), after, fraction, generator)
        differs |= not torch.equal(other, expected)
    assert differs


def test_random_and_magnitude_prune_and_add_what_freeevolve_did_in_each_round():
    # The toy run with k = 8, epsilon 0.6, seed 0: FreeEvolve's third round prunes one edge
    # and adds one.
    data = toy_dataset()
    config = TrainConfig.of(
        dataset="toy",
        n_neurons=8,
        epochs=6,
        batch_size=32,
        learning_rate=0.02,
        patience=2,
        seed=0,
        epsilon=0.6,
    )
    split = validation_split(data.x_train, data.y_train, config.data.val_fraction, config.seed)
    freeevolve = train_freeevolve(data, split, config)
    churn = [(r.pruned, r.added) for r in freeevolve.rounds]
    assert any(pruned and added for pruned, added in churn), churn
    reference = Reference.of(freeevolve)
    assert reference.round_changes == tuple(churn)
    for name in ("random", "magnitude"):
        result = train_model(name, data, split, config, reference)
        assert [(r.pruned, r.added) for r in result.rounds] == churn
        assert [r.edges for r in result.rounds] == [r.edges for r in freeevolve.rounds]
