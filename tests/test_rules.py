"""The field's topology rules on the FreeNet substrate: dense, random, magnitude, SET and RigL.

Each rule's pure function is checked on cases where the answer is known, and each rule class
through its hooks, called by hand with a FreeNet and hand-built BatchInfo / RoundInfo (no training
loop): the graph stays strictly lower-triangular, the edge count is what the rule promises, the
same seed gives the same masks, and the state round-trips.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from freenets import graph
from freenets.errors import ConfigError
from freenets.kernels import reference_activations
from freenets.model import FreeNet
from freenets.rules import RULES, make_rule
from freenets.rules.base import BatchInfo, Proposal, RoundInfo, TopologyRule, as_readd
from freenets.rules.dense import DenseRule
from freenets.rules.gradient import dense_gradient
from freenets.rules.pruning import MagnitudeRule, RandomRule, magnitude_step, random_step
from freenets.rules.selection import (
    budget_edges,
    choose_largest,
    choose_random,
    choose_smallest,
    drop_count,
    random_graph,
)
from freenets.rules.sparse import (
    RigLRule,
    SETRule,
    rigl_drop_fraction,
    rigl_step,
    set_drop,
    set_step,
)
from freenets.training.topology import apply_mask

mse = nn.functional.mse_loss


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def possible(k: int) -> int:
    return k * (k - 1) // 2


def freenet(k: int, seed: int = 0, *, in_features: int = 3, out_features: int = 2) -> FreeNet:
    return FreeNet(in_features, k, out_features, generator=seeded(seed))


def apply(
    model: FreeNet,
    proposal: torch.Tensor | Proposal | None,
    rule: TopologyRule,
    generator: torch.Generator | None = None,
) -> None:
    """What the loop does with a rule's proposal: apply_mask, new weights drawn by the rule."""
    if proposal is None:
        return
    mask, renew = (
        (proposal.mask, proposal.renew) if isinstance(proposal, Proposal) else (proposal, None)
    )
    assert graph.is_valid_mask(mask) and mask.shape == model.mask.shape
    draws = generator if generator is not None else seeded(99)
    apply_mask(
        model,
        mask,
        readd=rule.readd,
        draw=lambda count: rule.grown_weights(count, draws),
        renew=renew,
    )


def round_info(round_: int, seed: int | torch.Generator) -> RoundInfo:
    generator = seeded(seed) if isinstance(seed, int) else seed
    return RoundInfo(round=round_, epoch=round_ + 1, data=torch.zeros(1, 3), generator=generator)


def batch_info(
    step: int, total: int, generator: torch.Generator, inputs=None, targets=None
) -> BatchInfo:
    batch = torch.randn(8, 3, generator=seeded(step)) if inputs is None else inputs
    target = torch.randn(8, 2, generator=seeded(step + 1)) if targets is None else targets
    return BatchInfo(step, total, batch, target, mse, generator)


# ---------------------------------------------------------------------------------- selection


@given(st.integers(1, 12), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_choosers_pick_exactly_count_inside_the_candidates(random_mask, k, seed, density):
    candidates = random_mask(k, density, seed)
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
def test_dense_rule_keeps_every_allowed_edge_and_has_converged(k, random_mask):
    rule = DenseRule()
    model = freenet(k)
    assert rule.initial_mask(model, seeded(0)) is None  # already dense
    model.mask.copy_(random_mask(k, 0.3, 1))
    proposal = rule.initial_mask(model, seeded(0))
    assert proposal is not None or k == 1
    apply(model, proposal, rule)
    assert model.n_edges == possible(k)
    assert rule.converged
    assert rule.after_round(model, round_info(0, 0)) is None
    assert rule.instead_of_step(model, batch_info(1, 10, seeded(0))) is None
    assert rule.state_dict() == {}


# ---------------------------------------------------------------------------------- random, magnitude


def test_magnitude_step_removes_exactly_the_smallest_weights():
    k = 4
    mask = graph.dense_mask(k)
    mask[3, 1] = False  # an absent edge with the smallest weight of all must not count
    weight = torch.zeros(k, k)
    weight[1, 0], weight[2, 0], weight[2, 1] = 0.9, -0.1, 0.5
    weight[3, 0], weight[3, 1], weight[3, 2] = -0.7, 0.01, 0.2
    new = magnitude_step(mask, weight, 3, 0, seeded(0))
    assert new.nonzero().tolist() == [[1, 0], [3, 0]]  # |0.9| and |-0.7| stay
    new = magnitude_step(mask, weight, 1, 0, seeded(0))
    assert new.nonzero().tolist() == [[1, 0], [2, 1], [3, 0], [3, 2]]
    # Pruning 3 and adding 1: the one absent position (3, 1) is the only place to add.
    new = magnitude_step(mask, weight, 3, 1, seeded(0))
    assert new.nonzero().tolist() == [[1, 0], [3, 0], [3, 1]]


@pytest.mark.parametrize("name", ["random", "magnitude"])
def test_a_control_prunes_and_adds_exactly_its_counts_in_one_round(random_mask, name):
    mask = random_mask(9, 0.5, 3)
    n, free = graph.n_edges(mask), possible(9) - graph.n_edges(mask)
    weight = torch.randn(9, 9, generator=seeded(1))
    for pruned, added in [(0, 0), (3, 0), (0, 4), (5, 2), (n, free)]:
        if name == "random":
            new = random_step(mask, pruned, added, seeded(4))
        else:
            new = magnitude_step(mask, weight, pruned, added, seeded(4))
        assert graph.is_valid_mask(new)
        assert graph.n_edges(mask & ~new) == pruned  # exactly P present edges left
        assert graph.n_edges(new & ~mask) == added  # exactly A absent positions gained one
    with pytest.raises(ConfigError, match="cannot prune"):
        random_step(mask, n + 1, 0, seeded(0))
    with pytest.raises(ConfigError, match="add"):
        random_step(mask, 0, free + 1, seeded(0))


@settings(max_examples=40)
@given(
    st.integers(2, 9),
    st.integers(0, 2**31 - 1),
    st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)), min_size=0, max_size=6),
    st.sampled_from(["random", "magnitude"]),
)
def test_random_and_magnitude_follow_the_churn_round_by_round(k, seed, fractions, name):
    # Counts that FreeEvolve could have had, round after round, from the dense start.
    changes, edges = [], possible(k)
    for prune_fraction, add_fraction in fractions:
        pruned = int(prune_fraction * edges)
        added = int(add_fraction * (possible(k) - edges))
        changes.append((pruned, added))
        edges += added - pruned
    rule = make_rule(name, changes=changes)
    model = freenet(k, seed)
    assert rule.initial_mask(model, seeded(seed)) is None  # dense at start, as FreeEvolve
    generator = seeded(seed)
    for r, (pruned, added) in enumerate(changes):
        assert not rule.converged
        before = model.mask.clone()
        proposal = rule.after_round(model, round_info(r, generator))
        apply(model, proposal, rule)
        assert graph.is_valid_mask(model.mask)
        assert graph.n_edges(before & ~model.mask) == pruned
        assert graph.n_edges(model.mask & ~before) == added
    assert rule.converged
    frozen = model.mask.clone()
    for r in range(len(changes), len(changes) + 2):
        assert rule.after_round(model, round_info(r, generator)) is None
    assert torch.equal(model.mask, frozen)


def test_random_and_magnitude_choose_differently_from_each_other():
    model = freenet(12, 0)
    half = possible(12) // 2
    random_mask_ = RandomRule([(half, 0)]).after_round(model, round_info(0, 5))
    magnitude_mask = MagnitudeRule([(half, 0)]).after_round(model, round_info(0, 5))
    weight = model.weight.detach().abs()
    assert weight[magnitude_mask].min() >= weight[graph.dense_mask(12) & ~magnitude_mask].max()
    assert not torch.equal(random_mask_, magnitude_mask)


def test_changes_are_checked():
    for bad in ([3, -1], [(1.5, 0)], "12", 7, [True], [(1, 2, 3)], [(1, -1)], [("1", 0)]):
        with pytest.raises(ConfigError):
            RandomRule(bad)
    with pytest.raises(ConfigError, match="readd"):
        MagnitudeRule([(1, 0)], readd="keep")


# ---------------------------------------------------------------------------------- SET


def test_set_drop_keeps_the_weights_beyond_the_references_sign_thresholds():
    # Ten present edges over k = 5; the weights sorted: -0.9 -0.5 -0.3 -0.2 -0.05 | 0.02 0.1
    # 0.4 0.6 0.8. The value nearest zero is 0.02 at sorted position 5, so f = 5 and l = 6:
    # largestNegative = values[int(0.7 * 5)] = values[3] = -0.2 and smallestPositive =
    # values[int(min(9, 6 + 0.3 * 4))] = values[7] = 0.4. Kept: w < -0.2 or w > 0.4.
    mask = graph.dense_mask(5)
    weight = torch.zeros(5, 5)
    values = [-0.9, 0.02, -0.5, 0.1, -0.3, 0.4, -0.2, 0.6, -0.05, 0.8]
    weight[mask] = torch.tensor(values)
    kept = set_drop(mask, weight, 0.3)
    assert sorted(weight[kept].tolist()) == pytest.approx([-0.9, -0.5, -0.3, 0.6, 0.8])
    # Unlike |w| over all edges, which would drop 0.02, -0.05 and 0.1 (floor(0.3 * 10) = 3),
    # the reference drops by sign: 0.02, -0.05, 0.1, -0.2 and the threshold 0.4 itself.
    by_magnitude = mask & ~choose_smallest(mask, weight.abs(), 3, seeded(0))
    assert not torch.equal(kept, by_magnitude)
    # All positive: f = 0 keeps no negative, and positives above values[int(1 + 0.3 * 9)].
    weight[mask] = torch.arange(1, 11, dtype=torch.float32)
    assert sorted(weight[set_drop(mask, weight, 0.3)].tolist()) == [5, 6, 7, 8, 9, 10]
    assert torch.equal(set_drop(torch.zeros(5, 5, dtype=torch.bool), weight, 0.3), mask & False)


def test_set_step_regrows_as_many_at_random_and_renews_the_dropped_ones_it_grows_back(
    random_mask,
):
    k = 8
    mask = random_mask(k, 0.6, 2)
    n = graph.n_edges(mask)
    weight = torch.randn(k, k, generator=seeded(3))
    kept = set_drop(mask, weight, 0.3)
    dropped = graph.n_edges(mask & ~kept)
    assert dropped >= 3
    renewed_somewhere = False
    for seed in range(30):
        proposal = set_step(mask, weight, 0.3, seeded(seed))
        new = proposal.mask
        assert graph.is_valid_mask(new) and graph.n_edges(new) == n
        assert torch.equal(new & kept, kept)  # every kept edge stays
        grown = new & ~kept
        assert graph.n_edges(grown) == dropped
        assert proposal.renew is not None and torch.equal(proposal.renew, grown & mask)
        renewed_somewhere |= bool(proposal.renew.any())
    assert renewed_somewhere  # a dropped position can be grown straight back, as in the reference


def test_set_grows_weights_from_the_references_normal_distribution():
    rule = SETRule(density=0.5)
    draws = rule.grown_weights(20000, seeded(0))
    assert draws.shape == (20000,)
    assert abs(float(draws.mean())) < 0.003 and float(draws.std()) == pytest.approx(0.1, rel=0.02)
    # Through apply_mask: every grown edge, a renewed one included, gets a drawn weight and
    # fresh optimiser state; the kept edges keep theirs.
    model = freenet(10, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    apply(model, rule.initial_mask(model, seeded(0)), rule)
    before = model.weight.detach().clone()
    proposal = rule.after_round(model, round_info(0, 1))
    assert isinstance(proposal, Proposal)
    kept = proposal.mask & ~proposal.renew & model.mask
    change = apply_mask(
        model,
        proposal.mask,
        optimizer,
        readd=rule.readd,
        draw=lambda count: rule.grown_weights(count, seeded(5)),
        renew=proposal.renew,
    )
    grown = proposal.mask & ~kept
    assert change.added == change.pruned == graph.n_edges(grown) > 0
    expected = rule.grown_weights(graph.n_edges(grown), seeded(5))
    assert torch.equal(model.weight.detach()[grown], expected)
    assert torch.equal(model.weight.detach()[kept], before[kept])
    moments = optimizer.state[model.weight]["exp_avg"]
    assert (moments[grown] == 0).all() and (moments[kept] != 0).any()


@settings(max_examples=30)
@given(st.integers(1, 10), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_set_rule_keeps_its_budget_every_round(k, seed, density):
    rule = make_rule("set", density=density)
    assert rule.readd == "random"
    model = freenet(k, seed)
    apply(model, rule.initial_mask(model, seeded(seed)), rule)
    budget = budget_edges(k, None, density)
    assert model.n_edges == budget
    generator = seeded(seed + 1)
    for r in range(4):
        proposal = rule.after_round(model, round_info(r, generator))
        apply(model, proposal, rule, generator)
        assert graph.is_valid_mask(model.mask) and model.n_edges == budget
    assert not rule.converged


def test_budget_from_edges_or_density():
    assert budget_edges(10, 7, None) == 7
    assert budget_edges(10, None, 0.1) == 5  # 4.5 rounds half up
    assert budget_edges(10, None, 1.0) == 45
    model = freenet(5)
    mask = SETRule(edges=4).initial_mask(model, seeded(0))
    assert graph.n_edges(mask) == 4
    with pytest.raises(ConfigError, match="exceeds the 10 allowed over 5 neurons"):
        SETRule(edges=11).initial_mask(model, seeded(0))
    for options in ({}, {"edges": 3, "density": 0.5}, {"edges": -1}, {"density": 1.5}):
        with pytest.raises(ConfigError):
            SETRule(**options)
    for zeta in (0.0, 1.2, float("nan")):
        with pytest.raises(ConfigError, match="zeta"):
            SETRule(edges=3, zeta=zeta)


# ---------------------------------------------------------------------------------- RigL: gradient


def reference_dense_gradient(model, inputs, targets):
    """dL/dW through the per-neuron reference recurrence with the full mask (autograd)."""
    k = model.n_neurons
    effective = (model.weight.detach() * model.mask).requires_grad_()
    h = reference_activations(model.encoder(inputs).detach(), effective, graph.dense_mask(k))
    # k = 1 has no edge: the weight is then unused, and its gradient zero
    (gradient,) = torch.autograd.grad(mse(model.decoder(h), targets), effective, allow_unused=True)
    if gradient is None:
        gradient = torch.zeros_like(effective)
    return gradient * graph.dense_mask(k)


@settings(max_examples=25)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_dense_gradient_matches_autograd_through_the_reference(random_mask, k, seed, density):
    model = freenet(k, seed).double()
    model.mask.copy_(random_mask(k, density, seed))
    inputs = torch.randn(6, 3, generator=seeded(seed), dtype=torch.float64)
    targets = torch.randn(6, 2, generator=seeded(seed + 1), dtype=torch.float64)
    got = dense_gradient(model, inputs, targets, mse)
    torch.testing.assert_close(got, reference_dense_gradient(model, inputs, targets))
    assert not torch.triu(got).any()


def test_dense_gradient_is_the_outer_product_on_a_known_case():
    # No edges, an identity encoder and a decoder that reads neuron 2 only: h = relu(x),
    # dL/dz = [0, 0, relu'(x_2)], so dL/dW[2, i] = sum over the batch of h_i where x_2 > 0.
    model = FreeNet(3, 3, 1)
    with torch.no_grad():
        model.encoder.weight.copy_(torch.eye(3))
        model.encoder.bias.zero_()
        model.decoder.weight.copy_(torch.tensor([[0.0, 0.0, 1.0]]))
        model.decoder.bias.zero_()
        model.mask.zero_()
    inputs = torch.tensor([[3.0, 1.0, 1.0], [1.0, 2.0, -1.0]])  # sample 2 has neuron 2 off
    got = dense_gradient(model, inputs, torch.zeros(2, 1), lambda out, _: out.sum())
    expected = torch.zeros(3, 3)
    expected[2, 0], expected[2, 1] = 3.0, 1.0
    assert torch.equal(got, expected)


def test_dense_gradient_leaves_the_model_untouched(random_mask):
    model = freenet(6, 1)
    model.mask.copy_(random_mask(6, 0.5, 1))
    inputs, targets = torch.randn(5, 3, generator=seeded(2)), torch.randn(5, 2, generator=seeded(3))
    mse(model(inputs), targets).backward()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    dense_gradient(model, inputs, targets, mse)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name])
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads[name])


# ---------------------------------------------------------------------------------- RigL: rule


def test_rigl_step_regrows_at_the_largest_gradient():
    k = 5
    mask = torch.zeros(k, k, dtype=torch.bool)
    for j, i in [(1, 0), (2, 1), (3, 0), (4, 2), (4, 3)]:
        mask[j, i] = True
    weight = torch.ones(k, k)
    weight[2, 1], weight[4, 3] = 0.05, -0.02  # the two weakest edges
    gradient = torch.zeros(k, k)
    gradient[3, 0] = 100.0  # present: not a candidate
    gradient[2, 0], gradient[4, 1], gradient[3, 2] = -9.0, 8.0, 1.0
    gradient[4, 3] = 7.0  # dropped, so a candidate, but below |-9| and 8
    new = rigl_step(mask, weight, gradient, 0.4, seeded(0))  # drops floor(0.4 * 5) = 2
    assert new.nonzero().tolist() == [[1, 0], [2, 0], [3, 0], [4, 1], [4, 2]]
    gradient[4, 3] = 8.5  # now the dropped edge comes straight back
    new = rigl_step(mask, weight, gradient, 0.4, seeded(0))
    assert new.nonzero().tolist() == [[1, 0], [2, 0], [3, 0], [4, 2], [4, 3]]


def test_rigl_rule_regrows_where_the_reference_dense_gradient_is_largest():
    k = 8
    rule = RigLRule(density=0.4, zeta=0.5, delta_t=1)
    model = freenet(k, 4)
    apply(model, rule.initial_mask(model, seeded(0)), rule)
    n = model.n_edges
    info = batch_info(1, 1000, seeded(0))
    fraction = rigl_drop_fraction(1, 1000, 0.5)
    count = drop_count(n, fraction)
    assert count >= 2
    weight = model.weight.detach()
    kept = model.mask & ~choose_smallest(model.mask, weight.abs(), count, seeded(0))
    reference = reference_dense_gradient(model, info.inputs, info.targets).abs()
    candidates = graph.dense_mask(k) & ~kept
    expected = kept | choose_largest(candidates, reference, count, seeded(0))
    assert torch.equal(rule.instead_of_step(model, info), expected)


def test_rigl_drop_fraction_is_cosine_annealed_to_zero_at_75_percent():
    assert rigl_drop_fraction(0, 1000, 0.3) == pytest.approx(0.3)
    assert rigl_drop_fraction(375, 1000, 0.3) == pytest.approx(0.15)
    assert rigl_drop_fraction(250, 1000, 0.3) == pytest.approx(0.15 * (1 + math.cos(math.pi / 3)))
    assert rigl_drop_fraction(750, 1000, 0.3) == 0.0
    assert rigl_drop_fraction(900, 1000, 0.3) == 0.0


def test_rigl_respects_delta_t_and_stops_at_75_percent(monkeypatch):
    import freenets.rules.sparse as sparse

    k, total = 20, 1000
    rule = RigLRule(edges=60, delta_t=125)
    model = freenet(k, 2)
    apply(model, rule.initial_mask(model, seeded(0)), rule)
    updates = []

    def counted(model, inputs, targets, loss, **options):
        updates.append(step)
        return dense_gradient(model, inputs, targets, loss, **options)

    monkeypatch.setattr(sparse, "dense_gradient", counted)
    generator = seeded(1)
    inputs, targets = torch.randn(8, 3, generator=generator), torch.randn(8, 2, generator=generator)
    changed = []
    for step in range(1, total + 1):
        if step % 25 == 0:  # training moves the weights, the grown ones off zero
            with torch.no_grad():
                model.weight.add_(torch.randn(k, k, generator=generator), alpha=0.1)
        info = batch_info(step, total, generator, inputs, targets)
        proposal = rule.instead_of_step(model, info)
        if proposal is not None:
            changed.append(step)
            before = model.mask.clone()
            apply(model, proposal, rule)
            assert graph.is_valid_mask(model.mask) and model.n_edges == 60
            assert (model.weight.detach()[model.mask & ~before] == 0).all()
        assert rule.converged == (step >= 750)
    # 750, 875 and 1000 are multiples of delta_t too, but at or past 75% of the 1000 steps
    assert updates == [125, 250, 375, 500, 625]
    assert changed == updates


def test_rigl_skips_the_gradient_when_nothing_would_drop(monkeypatch):
    import freenets.rules.sparse as sparse

    # 3 edges at drop fraction below 1/3: floor(zeta_t * 3) = 0. The update step still takes
    # the optimiser step's place (the graph proposed unchanged), with no gradient pass.
    rule = RigLRule(edges=3, delta_t=1)
    model = freenet(4)
    apply(model, rule.initial_mask(model, seeded(0)), rule)
    monkeypatch.setattr(sparse, "dense_gradient", lambda *args, **kwargs: pytest.fail("called"))
    assert torch.equal(rule.instead_of_step(model, batch_info(1, 100, seeded(0))), model.mask)
    for options in ({"delta_t": 0}, {"delta_t": 2.5}, {"stop": 0.0}):
        with pytest.raises(ConfigError):
            RigLRule(edges=3, **options)


# ---------------------------------------------------------------------------------- seeds, state


def run_rounds(rule, seed: int, rounds: int = 4) -> list[torch.Tensor]:
    model = freenet(9, 0)
    generator = seeded(seed)
    apply(model, rule.initial_mask(model, generator), rule)
    masks = [model.mask.clone()]
    for r in range(rounds):
        if isinstance(rule, RigLRule):
            proposal = rule.instead_of_step(model, batch_info(r + 1, 100, generator))
        else:
            proposal = rule.after_round(model, round_info(r, generator))
        apply(model, proposal, rule)
        masks.append(model.mask.clone())
    return masks


def make_each():
    yield lambda: RandomRule([(6, 0), (10, 0), (2, 7), (15, 0)])
    yield lambda: MagnitudeRule([(6, 0), (10, 0), (2, 7), (15, 0)])
    yield lambda: SETRule(edges=15, zeta=0.5)
    yield lambda: RigLRule(edges=15, zeta=0.5, delta_t=1)


@pytest.mark.parametrize("make", list(make_each()))
def test_the_same_seed_gives_the_same_masks(make):
    first, second = run_rounds(make(), 11), run_rounds(make(), 11)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    others = [run_rounds(make(), seed) for seed in (12, 13)]
    # magnitude too: it adds at random (the third round here)
    assert any(not torch.equal(a, b) for other in others for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("make", list(make_each()))
def test_state_dict_round_trips_and_a_resumed_rule_proposes_the_same(make):
    original = make()
    model = freenet(9, 0)
    generator = seeded(3)
    apply(model, original.initial_mask(model, generator), original)
    info = round_info(0, generator)
    apply(model, original.after_round(model, info), original)
    if isinstance(original, RigLRule):
        original.instead_of_step(model, batch_info(80, 100, generator))  # past 75%: finished
    state = original.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert resumed.converged == original.converged
    fork = torch.Generator().set_state(generator.get_state())
    a = original.after_round(model, round_info(1, generator))
    b = resumed.after_round(model, round_info(1, fork))
    if isinstance(a, Proposal) and isinstance(b, Proposal):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.renew, b.renew)
    else:
        assert (a is None and b is None) or torch.equal(a, b)
    with pytest.raises(ValueError):
        resumed.load_state_dict({"unknown": 1})


def test_churn_rules_remember_the_rounds_used():
    rule = RandomRule([(5, 0), (5, 0)])
    rule.after_round(freenet(6), round_info(0, 0))
    assert rule.state_dict() == {"rounds_used": 1}
    resumed = RandomRule([(5, 0), (5, 0)])
    resumed.load_state_dict({"rounds_used": 2})
    assert resumed.converged
    rigl = RigLRule(edges=3)
    assert rigl.state_dict() == {"finished": False}
    rigl.load_state_dict({"finished": True})
    assert rigl.converged


# ---------------------------------------------------------------------------------- registry


def test_registry_names_every_rule_and_builds_it():
    assert sorted(RULES) == ["dense", "freeevolve", "magnitude", "random", "rigl", "set"]
    assert all(RULES[name].name == name for name in RULES)
    # Each rule names the frozen dataclass of its parameters, and config() fills it.
    built = {
        "freeevolve": make_rule("freeevolve", epsilon=0.4, patience=2),
        "dense": make_rule("dense"),
        "random": make_rule("random", changes=[(2, 1)]),
        "magnitude": make_rule("magnitude", changes=[(2, 1)], readd="zero"),
        "set": make_rule("set", density=0.2, zeta=0.5),
        "rigl": make_rule("rigl", edges=12, delta_t=50, stop=0.5),
    }
    for name, rule in built.items():
        config = rule.config()
        assert type(config) is RULES[name].config_type
        assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen
        assert make_rule(name, **dataclasses.asdict(config)).config() == config
    assert built["rigl"].config().stop == 0.5 and built["set"].config().zeta == 0.5
    with pytest.raises(ConfigError, match="rule 'freeevolve': epsilon must lie in"):
        make_rule("freeevolve", epsilon=2.0)
    rule = make_rule("rigl", edges=12, delta_t=50)
    assert isinstance(rule, RigLRule) and rule.edges == 12 and rule.delta_t == 50
    assert rule.zeta == 0.3 and rule.readd == "zero"
    assert make_rule("set", edges=12).readd == "random"
    assert make_rule("random", changes=[(1, 0)]).readd == "restore"
    with pytest.raises(
        ConfigError, match="unknown topology rule 'lottery'; choose one of freeevolve, dense"
    ):
        make_rule("lottery")
    with pytest.raises(
        ConfigError, match="rule 'set': got an unexpected keyword argument 'delta_t'"
    ):
        make_rule("set", edges=3, delta_t=5)
    with pytest.raises(ConfigError, match="rule 'random' needs changes"):
        make_rule("random")


def test_as_readd_keeps_the_two_modes_and_refuses_any_other_string():
    assert as_readd("restore") == "restore"
    assert as_readd("zero") == "zero"
    with pytest.raises(ConfigError, match="readd must be 'restore' or 'zero', got 'Zero'"):
        as_readd("Zero")
