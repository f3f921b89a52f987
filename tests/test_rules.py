"""The field's topology rules on the FreeNet substrate: dense, random, magnitude, SET and RigL.

Each rule's pure function is checked on cases where the answer is known, and each rule class
through its hooks, called by hand with a FreeNet and hand-built BatchInfo / RoundInfo (no training
loop): the graph stays strictly lower-triangular, the edge count is what the rule promises, the
same seed gives the same masks, and the state round-trips.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from freenets import graph
from freenets.errors import ConfigError
from freenets.model import FreeNet
from freenets.rules import RULES, make_rule
from freenets.rules.base import BatchInfo, RoundInfo
from freenets.rules.dense import DenseRule
from freenets.rules.pruning import MagnitudeRule, RandomRule, magnitude_step, random_step
from freenets.rules.selection import (
    choose_largest,
    choose_random,
    choose_smallest,
    drop_count,
    random_graph,
)

mse = nn.functional.mse_loss


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def possible(k: int) -> int:
    return k * (k - 1) // 2


def freenet(k: int, seed: int = 0, *, in_features: int = 3, out_features: int = 2) -> FreeNet:
    return FreeNet(in_features, k, out_features, generator=seeded(seed))


def apply(model: FreeNet, new_mask: torch.Tensor | None, readd: str) -> None:
    """What the loop's apply_mask does with a proposal, enough for these tests."""
    if new_mask is None:
        return
    assert graph.is_valid_mask(new_mask) and new_mask.shape == model.mask.shape
    with torch.no_grad():
        if readd == "zero":
            model.weight[new_mask & ~model.mask] = 0.0
        model.mask.copy_(new_mask)


def round_info(round_: int, seed: int | torch.Generator) -> RoundInfo:
    generator = seeded(seed) if isinstance(seed, int) else seed
    return RoundInfo(round=round_, epoch=round_ + 1, data=torch.zeros(1, 3), generator=generator)


def batch_info(
    step: int, total: int, generator: torch.Generator, inputs=None, targets=None
) -> BatchInfo:
    batch = torch.randn(8, 3, generator=seeded(step)) if inputs is None else inputs
    target = torch.randn(8, 2, generator=seeded(step + 1)) if targets is None else targets
    return BatchInfo(step, total, batch, target, mse, generator)


def random_mask(k: int, seed: int, density: float = 0.5) -> torch.Tensor:
    generator = seeded(seed)
    return (torch.rand(k, k, generator=generator) < density) & graph.dense_mask(k)


# ---------------------------------------------------------------------------------- selection


@given(st.integers(1, 12), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_choosers_pick_exactly_count_inside_the_candidates(k, seed, density):
    candidates = random_mask(k, seed, density)
    n = graph.n_edges(candidates)
    scores = torch.randn(k, k, generator=seeded(seed + 1))
    for count in {0, n // 2, n}:
        for chosen in (
            choose_random(candidates, count, seeded(seed)),
            choose_smallest(candidates, scores, count, seeded(seed)),
            choose_largest(candidates, scores, count, seeded(seed)),
        ):
            assert graph.n_edges(chosen) == count
            assert not (chosen & ~candidates).any()
    with pytest.raises(ValueError, match="cannot choose"):
        choose_random(candidates, n + 1, seeded(seed))


def test_choosers_rank_by_score_and_break_ties_at_random():
    candidates = graph.dense_mask(4)  # 6 positions
    scores = torch.zeros(4, 4)
    scores[1, 0], scores[2, 0], scores[2, 1] = 5.0, -1.0, 2.0
    scores[3, 0], scores[3, 1], scores[3, 2] = 4.0, 3.0, 0.5
    smallest = choose_smallest(candidates, scores, 2, seeded(0))
    assert smallest.nonzero().tolist() == [[2, 0], [3, 2]]
    largest = choose_largest(candidates, scores, 2, seeded(0))
    assert largest.nonzero().tolist() == [[1, 0], [3, 0]]
    # All scores equal: every candidate is chosen by some seed, each seed the same every time.
    flat = torch.zeros(4, 4)
    picks = {
        tuple(choose_smallest(candidates, flat, 1, seeded(s)).nonzero()[0].tolist())
        for s in range(60)
    }
    assert picks == {tuple(p) for p in candidates.nonzero().tolist()}
    assert torch.equal(
        choose_smallest(candidates, flat, 3, seeded(7)),
        choose_smallest(candidates, flat, 3, seeded(7)),
    )


@pytest.mark.parametrize("k", [1, 2, 3, 7, 20])
def test_random_graph_has_the_requested_edges(k):
    for edges in sorted({0, possible(k) // 3, possible(k)}):
        mask = random_graph(k, edges, seeded(k))
        assert graph.is_valid_mask(mask) and mask.shape == (k, k)
        assert graph.n_edges(mask) == edges


def test_random_graph_is_uniform_over_positions():
    # 600 graphs of 1 edge over k = 4: each of the 6 positions 100 times, give or take 9.
    counts = torch.zeros(4, 4)
    generator = seeded(0)
    for _ in range(600):
        counts += random_graph(4, 1, generator)
    present = counts[graph.dense_mask(4)]
    assert present.sum() == 600 and present.min() > 60 and present.max() < 140


def test_drop_count_rounds_down_as_rigl():
    assert [drop_count(n, 0.3) for n in (0, 1, 3, 4, 10, 11)] == [0, 0, 0, 1, 3, 3]
    assert drop_count(100, 0.29) == 29 and drop_count(7, 1.0) == 7


# ---------------------------------------------------------------------------------- dense


@pytest.mark.parametrize("k", [1, 2, 5])
def test_dense_rule_keeps_every_allowed_edge_and_has_converged(k):
    rule = DenseRule()
    model = freenet(k)
    assert rule.initial_mask(model, seeded(0)) is None  # already dense
    model.mask.copy_(random_mask(k, 1, 0.3))
    proposal = rule.initial_mask(model, seeded(0))
    assert proposal is not None or k == 1
    apply(model, proposal, rule.readd)
    assert model.n_edges == possible(k)
    assert rule.converged
    assert rule.after_round(model, round_info(0, 0)) is None
    assert rule.after_batch(model, batch_info(1, 10, seeded(0))) is None
    assert rule.state_dict() == {}


# ---------------------------------------------------------------------------------- random, magnitude


def test_magnitude_step_removes_exactly_the_smallest_weights():
    k = 4
    mask = graph.dense_mask(k)
    mask[3, 1] = False  # an absent edge with the smallest weight of all must not count
    weight = torch.zeros(k, k)
    weight[1, 0], weight[2, 0], weight[2, 1] = 0.9, -0.1, 0.5
    weight[3, 0], weight[3, 1], weight[3, 2] = -0.7, 0.01, 0.2
    new = magnitude_step(mask, weight, 2, seeded(0))
    assert new.nonzero().tolist() == [[1, 0], [3, 0]]  # |0.9| and |-0.7| stay
    new = magnitude_step(mask, weight, 4, seeded(0))
    assert new.nonzero().tolist() == [[1, 0], [2, 1], [3, 0], [3, 2]]


def test_steps_grow_at_random_among_absent_positions_when_the_target_rises():
    mask = random_mask(8, 3, 0.3)
    n = graph.n_edges(mask)
    for step in (random_step, lambda m, t, g: magnitude_step(m, torch.randn(8, 8), t, g)):
        new = step(mask, n + 5, seeded(4))
        assert graph.is_valid_mask(new) and graph.n_edges(new) == n + 5
        assert not (mask & ~new).any()  # nothing removed
    with pytest.raises(ConfigError, match="impossible over 8 neurons"):
        random_step(mask, possible(8) + 1, seeded(0))


@settings(max_examples=40)
@given(
    st.integers(1, 9),
    st.integers(0, 2**31 - 1),
    st.lists(st.floats(0.0, 1.0), min_size=0, max_size=6),
    st.sampled_from(["random", "magnitude"]),
)
def test_random_and_magnitude_follow_the_targets_round_by_round(k, seed, fractions, name):
    targets = [int(f * possible(k)) for f in fractions]
    rule = make_rule(name, targets=targets)
    model = freenet(k, seed)
    assert rule.initial_mask(model, seeded(seed)) is None  # dense at start, as FreeEvolve
    generator = seeded(seed)
    for r, target in enumerate(targets):
        assert not rule.converged
        before = model.mask.clone()
        proposal = rule.after_round(model, round_info(r, generator))
        apply(model, proposal, rule.readd)
        assert graph.is_valid_mask(model.mask)
        assert model.n_edges == target
        if target <= graph.n_edges(before):
            assert not (model.mask & ~before).any()  # only removals
        else:
            assert not (before & ~model.mask).any()  # only additions
    assert rule.converged
    frozen = model.mask.clone()
    for r in range(len(targets), len(targets) + 2):
        assert rule.after_round(model, round_info(r, generator)) is None
    assert torch.equal(model.mask, frozen)


def test_random_and_magnitude_choose_differently_from_each_other():
    model = freenet(12, 0)
    target = possible(12) // 2
    random_mask_ = RandomRule([target]).after_round(model, round_info(0, 5))
    magnitude_mask = MagnitudeRule([target]).after_round(model, round_info(0, 5))
    weight = model.weight.detach().abs()
    assert weight[magnitude_mask].min() >= weight[graph.dense_mask(12) & ~magnitude_mask].max()
    assert not torch.equal(random_mask_, magnitude_mask)


def test_targets_are_checked():
    for bad in ([3, -1], [1.5], "12", 7, [True]):
        with pytest.raises(ConfigError):
            RandomRule(bad)
    with pytest.raises(ConfigError, match="readd"):
        MagnitudeRule([1], readd="keep")


# ---------------------------------------------------------------------------------- seeds, state


def run_rounds(rule, seed: int, rounds: int = 4) -> list[torch.Tensor]:
    model = freenet(9, 0)
    generator = seeded(seed)
    apply(model, rule.initial_mask(model, generator), rule.readd)
    masks = [model.mask.clone()]
    for r in range(rounds):
        proposal = rule.after_round(model, round_info(r, generator))
        apply(model, proposal, rule.readd)
        masks.append(model.mask.clone())
    return masks


def make_each():
    yield lambda: RandomRule([30, 20, 25, 10])
    yield lambda: MagnitudeRule([30, 20, 25, 10])


@pytest.mark.parametrize("make", list(make_each()))
def test_the_same_seed_gives_the_same_masks(make):
    first, second = run_rounds(make(), 11), run_rounds(make(), 11)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    others = [run_rounds(make(), seed) for seed in (12, 13)]
    # magnitude too: it grows at random when a target rises (the third round here)
    assert any(not torch.equal(a, b) for other in others for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("make", list(make_each()))
def test_state_dict_round_trips_and_a_resumed_rule_proposes_the_same(make):
    original = make()
    model = freenet(9, 0)
    generator = seeded(3)
    apply(model, original.initial_mask(model, generator), original.readd)
    info = round_info(0, generator)
    apply(model, original.after_round(model, info), original.readd)
    state = original.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert resumed.converged == original.converged
    fork = torch.Generator().set_state(generator.get_state())
    a = original.after_round(model, round_info(1, generator))
    b = resumed.after_round(model, round_info(1, fork))
    assert (a is None and b is None) or torch.equal(a, b)
    with pytest.raises(ValueError):
        resumed.load_state_dict({"unknown": 1})


def test_target_rules_remember_the_rounds_used():
    rule = RandomRule([10, 5])
    rule.after_round(freenet(6), round_info(0, 0))
    assert rule.state_dict() == {"rounds_used": 1}
    resumed = RandomRule([10, 5])
    resumed.load_state_dict({"rounds_used": 2})
    assert resumed.converged


# ---------------------------------------------------------------------------------- registry


def test_registry_names_every_rule_and_builds_it():
    assert sorted(RULES) == ["dense", "magnitude", "random"]
    assert all(RULES[name].name == name for name in RULES)
    rule = make_rule("magnitude", targets=[4, 2], readd="zero")
    assert isinstance(rule, MagnitudeRule) and rule.targets == (4, 2) and rule.readd == "zero"
    assert make_rule("random", targets=[1]).readd == "restore"
    with pytest.raises(ConfigError, match="unknown topology rule 'lottery'; choose one of dense"):
        make_rule("lottery")
    with pytest.raises(
        ConfigError, match="rule 'dense': got an unexpected keyword argument 'zeta'"
    ):
        make_rule("dense", zeta=0.3)
    with pytest.raises(ConfigError, match="rule 'random': missing a required argument"):
        make_rule("random")
