"""apply_mask, the one place a topology changes, and FreeEvolveRule, FreeEvolve as a rule."""

from __future__ import annotations

import copy

import pytest
import torch

import freenets
from freenets import FreeNet, coactivation, free_evolve, graph
from freenets.rules.base import TopologyChange
from freenets.rules.freeevolve import FreeEvolveRule
from freenets.training.evolver import Evolver
from freenets.training.topology import apply_mask


def trained(seed: int = 0, k: int = 8):
    """A FreeNet after a few Adam steps, so that every moment is non-zero, and its optimiser."""
    generator = torch.Generator().manual_seed(seed)
    model = FreeNet(5, k, 3, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        x = torch.randn(32, 5, generator=generator)
        y = torch.randint(0, 3, (32,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, optimizer, generator


def test_apply_mask_counts_changes_and_zeroes_the_moments_of_changed_edges_only(random_mask):
    model, optimizer, generator = trained()
    old = model.mask.clone()
    new = random_mask(8, 0.5, generator)
    moments = {key: value.clone() for key, value in optimizer.state[model.weight].items()}
    weight = model.weight.detach().clone()
    change = apply_mask(model, new, optimizer)
    added, pruned = new & ~old, old & ~new
    assert change == TopologyChange(graph.n_edges(new), graph.n_edges(added), graph.n_edges(pruned))
    assert change.changed and change.pruned > 0
    assert torch.equal(model.mask, new)
    assert torch.equal(model.weight.detach(), weight)  # "restore": weights are kept
    for key in ("exp_avg", "exp_avg_sq"):
        state = optimizer.state[model.weight][key]
        assert (state[added | pruned] == 0).all()
        kept = ~(added | pruned)
        assert torch.equal(state[kept], moments[key][kept])
    assert apply_mask(model, new, optimizer) == TopologyChange(graph.n_edges(new), 0, 0)


def test_apply_mask_zero_starts_new_edges_at_zero_and_keeps_the_others(random_mask):
    model, optimizer, generator = trained(1)
    sparse = random_mask(8, 0.5, generator)
    apply_mask(model, sparse, optimizer)
    before = model.weight.detach().clone()
    change = apply_mask(model, graph.dense_mask(8), optimizer, readd="zero")
    returned = graph.dense_mask(8) & ~sparse
    assert change.added == graph.n_edges(returned) and change.pruned == 0
    assert (model.weight.detach()[returned] == 0).all()
    assert torch.equal(model.weight.detach()[~returned], before[~returned])


@pytest.mark.parametrize(
    "bad",
    [
        torch.ones(8, 8, dtype=torch.bool),  # on and above the diagonal
        graph.dense_mask(8).float(),  # not bool
        graph.dense_mask(7),  # another size
    ],
)
def test_apply_mask_refuses_what_is_not_a_dag_over_the_model_and_changes_nothing(bad):
    model, optimizer, _ = trained(2)
    before = copy.deepcopy(model.state_dict())
    moments = copy.deepcopy(optimizer.state_dict())
    with pytest.raises(ValueError, match="mask"):
        apply_mask(model, bad, optimizer)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert torch.equal(
        optimizer.state_dict()["state"][2]["exp_avg"], moments["state"][2]["exp_avg"]
    )
    with pytest.raises(ValueError, match="readd"):
        apply_mask(model, graph.dense_mask(8), optimizer, readd="later")


def test_apply_mask_without_an_optimiser_or_before_its_first_step():
    model = FreeNet(3, 5, 2)
    optimizer = torch.optim.Adam(model.parameters())  # no state yet
    mask = graph.layered_mask([2, 3])
    assert apply_mask(model, mask, optimizer).edges == 6
    assert apply_mask(model, graph.dense_mask(5)).added == 4
    assert optimizer.state == {}


def test_the_rule_proposes_free_evolve_and_never_touches_the_model():
    model, _, generator = trained(3, k=10)
    x = torch.rand(200, 5, generator=generator)
    rule = FreeEvolveRule(0.5)
    before = copy.deepcopy(model.state_dict())
    proposal, step = rule.step(model, x)
    ncam, ncim = coactivation(model, x)
    assert torch.equal(proposal, free_evolve(model.mask, ncam, ncim, 0.5))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert step.edges == graph.n_edges(proposal)
    assert step.added == graph.n_edges(proposal & ~model.mask)
    assert step.pruned == graph.n_edges(model.mask & ~proposal)
    assert len(step.prune_values) == graph.n_edges(model.mask)
    assert rule.round_values() == {
        "prune_values": step.prune_values,
        "aug_values": step.aug_values,
    }


def test_the_rule_converges_after_patience_unchanged_rounds_and_then_proposes_nothing():
    from freenets.rules.base import RoundInfo

    model = FreeNet(4, 6, 2, generator=torch.Generator().manual_seed(4))
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(5))
    rule = FreeEvolveRule(0.5, patience=2)
    changes, unchanged = [], 0
    for round_ in range(8):
        proposal = rule.after_round(model, RoundInfo(round_, round_ + 1, x, torch.Generator()))
        if proposal is None:
            break
        changes.append(apply_mask(model, proposal).changed)
        unchanged = 0 if changes[-1] else unchanged + 1
        assert rule.unchanged_rounds == unchanged
    assert rule.converged
    assert changes[-2:] == [False, False] and len(changes) < 8
    assert rule.after_round(model, RoundInfo(9, 10, x, torch.Generator())) is None
    assert rule.state_dict() == {"unchanged_rounds": 2}


def test_rule_state_round_trips_and_bad_state_is_refused():
    rule = FreeEvolveRule(0.25)
    rule.load_state_dict({"unchanged_rounds": 2})
    assert rule.state_dict() == {"unchanged_rounds": 2} and not rule.converged
    rule.load_state_dict({"unchanged_rounds": 3})
    assert rule.converged
    for bad in [{}, {"unchanged_rounds": -1}, {"unchanged_rounds": True}, {"x": 1}, [1]]:
        with pytest.raises(ValueError, match="FreeEvolve"):
            rule.load_state_dict(bad)
    for options, fragment in [
        ({"epsilon": 1.0}, "epsilon"),
        ({"epsilon": 0.2, "patience": 0}, "patience"),
        ({"epsilon": 0.2, "readd": "never"}, "readd"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            FreeEvolveRule(**options)


def test_evolver_is_the_rule_and_apply_mask_and_keeps_its_names():
    assert freenets.Evolver is Evolver
    model, optimizer, generator = trained(6, k=10)
    twin, twin_optimizer = copy.deepcopy(model), copy.deepcopy(optimizer)
    x = torch.rand(300, 5, generator=generator)
    evolver = Evolver(model, 0.5, optimizer=optimizer, patience=2)
    record = evolver.step(x)
    proposal, expected = FreeEvolveRule(0.5).step(twin, x)
    apply_mask(twin, proposal, twin_optimizer)
    fields = ("edges", "added", "pruned", "prune_values", "aug_values")
    assert [getattr(record, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert (record.round, record.step) == (1, None)  # the Evolver's record says when
    assert torch.equal(model.mask, twin.mask)
    assert evolver.history == [record]
    assert evolver.unchanged_steps == (0 if record.changed else 1)
    assert (evolver.epsilon, evolver.patience, evolver.readd) == (0.5, 2, "restore")
