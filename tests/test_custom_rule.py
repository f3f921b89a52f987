"""A rule of the user's own, and the registered ones, through every front end.

The rule is defined here as a user would: a ``TopologyRule`` subclass with one hook. It runs in
the estimator, the Evolver of a plain loop and the Lightning callback, and does what it says in
each (one edge fewer per round).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from freenets import Evolver, FreeNet, FreeNetClassifier, graph
from freenets.rules.base import TopologyRule
from freenets.rules.sparse import RigLRule, SETRule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class DropWeakest(TopologyRule):
    """Each round, remove the present edge of smallest |weight|."""

    name = "drop-weakest"

    def after_round(self, model, info):
        if not model.mask.any():
            return None
        weight = model.weight.detach().abs().masked_fill(~model.mask, float("inf"))
        mask = model.mask.clone()
        mask.view(-1)[weight.argmin()] = False
        return mask


def blobs():
    x, y = make_blobs(200, n_features=4, centers=3, random_state=0)
    return (x - x.mean(0)) / x.std(0), y


def test_a_custom_rule_in_the_estimator():
    x, y = blobs()
    estimator = FreeNetClassifier(n_neurons=12, rule=DropWeakest(), max_iter=5, random_state=0)
    estimator.fit(x, y)
    edges = [record["edges"] for record in estimator.history_]
    dense = graph.n_edges(graph.dense_mask(12))
    assert edges == [dense - epoch for epoch in range(5)]  # one fewer after each of 4 rounds
    assert [record["pruned"] for record in estimator.history_[:-1]] == [1, 1, 1, 1]
    assert estimator.model_.n_edges == dense - 4
    assert [r.pruned for r in estimator.evolver_.history] == [1, 1, 1, 1]
    assert isinstance(estimator.get_params()["rule"], DropWeakest)
    # A refit starts from a fresh copy of the rule: the same result.
    again = FreeNetClassifier(n_neurons=12, rule=DropWeakest(), max_iter=5, random_state=0)
    np.testing.assert_array_equal(again.fit(x, y).predict_proba(x), estimator.predict_proba(x))


def test_registered_rules_in_the_estimator():
    x, y = blobs()
    budget = SETRule(density=0.4)
    estimator = FreeNetClassifier(n_neurons=12, rule=budget, max_iter=4, random_state=0)
    estimator.fit(x, y)
    assert budget.density == 0.4 and estimator.model_.n_edges == round(0.4 * 66)
    assert all(r.added == r.pruned > 0 for r in estimator.evolver_.history)
    dense = FreeNetClassifier(n_neurons=12, rule=None, max_iter=2, random_state=0).fit(x, y)
    assert dense.evolver_ is None and dense.model_.n_edges == 66
    with pytest.warns(FutureWarning, match="evolve is deprecated"):
        old = FreeNetClassifier(n_neurons=12, evolve=False, max_iter=2, random_state=0)
        old.fit(x, y)
    np.testing.assert_array_equal(old.predict_proba(x), dense.predict_proba(x))
    with pytest.raises(ValueError, match="exactly one of edges or density"):
        FreeNetClassifier(n_neurons=12, rule="set", max_iter=1).fit(x, y)


def plain_loop(evolver, model, optimizer, x, y, epochs):
    loss = torch.nn.functional.cross_entropy
    for epoch in range(1, epochs + 1):
        for batch in torch.arange(len(x)).split(50):
            optimizer.zero_grad()
            loss(model(x[batch]), y[batch]).backward()
            if not evolver.replaces_step(x[batch], y[batch], loss):
                optimizer.step()
                evolver.after_step(x[batch], y[batch], loss)
        if epoch < epochs:
            evolver.step(x, epoch=epoch)


def test_a_custom_rule_and_rigl_in_the_evolver():
    x, y = (torch.tensor(a) for a in blobs())
    x = x.float()
    model = FreeNet(4, 10, 3, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    evolver = Evolver(model, DropWeakest(), optimizer)
    plain_loop(evolver, model, optimizer, x, y, epochs=4)
    assert [r.edges for r in evolver.history] == [44, 43, 42]
    assert [(r.round, r.epoch) for r in evolver.history] == [(1, 1), (2, 2), (3, 3)]
    # RigL: the initial graph of its budget, then updates in place of steps (4 batches a
    # epoch, 16 steps, updates every 3 before 75% of them: steps 3, 6, 9).
    model = FreeNet(4, 10, 3, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with pytest.raises(TypeError, match="give total_steps"):
        Evolver(model, RigLRule(edges=20, delta_t=3), optimizer)
    evolver = Evolver(model, RigLRule(edges=20, delta_t=3), optimizer, total_steps=16)
    assert evolver.start().edges == 20
    plain_loop(evolver, model, optimizer, x, y, epochs=4)
    assert [r.step for r in evolver.history if r.step is not None] == [3, 6, 9]
    assert model.n_edges == 20
    assert int(optimizer.state[model.weight]["step"]) == 16 - 3  # three steps were replaced


def test_a_custom_rule_in_lightning():
    pl = pytest.importorskip("lightning.pytorch")
    from freenets.lightning import TopologyCallback

    x, y = (torch.tensor(a) for a in blobs())
    x = x.float()

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = FreeNet(4, 10, 3, generator=torch.Generator().manual_seed(0))

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            return torch.nn.functional.cross_entropy(self.net(inputs), targets)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    callback = TopologyCallback(DropWeakest(), x)
    module = Module()
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    assert [(r.epoch, r.edges, r.module) for r in callback.history] == [
        (1, 44, "net"),
        (2, 43, "net"),
        (3, 42, "net"),
    ]
    assert module.net.n_edges == 42
    with pytest.raises(ValueError, match="cannot skip"):
        TopologyCallback(RigLRule(edges=20), x)
