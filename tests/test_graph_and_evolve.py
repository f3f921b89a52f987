"""FreeEvolve (Algorithm 2) against a literal evaluation of its formulas, fuzzed over random graphs."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from freenets import free_evolve, graph
from freenets.rules.freeevolve import decisions, theorem2_holds


@pytest.fixture(scope="module")
def random_case(random_mask):
    """``random_case(k, seed, density)``: a random graph with random NCAM and NCIM."""

    def build(k: int, seed: int, density: float):
        generator = torch.Generator().manual_seed(seed)
        mask = random_mask(k, density, generator)
        ncam = torch.rand(k, k, generator=generator, dtype=torch.float64)
        ncim = torch.rand(k, k, generator=generator, dtype=torch.float64)
        return mask, ncam, ncim

    return build


cases = st.tuples(
    st.integers(1, 30),
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 1.0),
    st.floats(0.01, 0.99),
)


@given(cases)
def test_free_evolve_is_the_literal_formula(random_case, case):
    k, seed, density, epsilon = case
    mask, ncam, ncim = random_case(k, seed, density)
    new = free_evolve(mask, ncam, ncim, epsilon)
    for j in range(k):
        for i in range(k):
            g = bool(mask[j, i])
            aug = bool(ncam[j, i] > 1 - epsilon) and not g and i < j
            prune = bool(ncim[j, i] > 1 - epsilon) and g
            assert bool(new[j, i]) == ((g and not prune) or (aug and not prune))


@given(cases)
def test_free_evolve_keeps_a_dag_and_respects_thresholds(random_case, case):
    k, seed, density, epsilon = case
    mask, ncam, ncim = random_case(k, seed, density)
    new = free_evolve(mask, ncam, ncim, epsilon)
    assert graph.is_valid_mask(new)
    pruned = mask & ~new
    added = new & ~mask
    assert bool((ncim[pruned] > 1 - epsilon).all())  # never prunes with NCIM <= 1 - eps
    assert bool((ncam[added] > 1 - epsilon).all())  # never adds with NCAM <= 1 - eps


def test_free_evolve_is_pure(random_case):
    mask, ncam, ncim = random_case(12, 3, 0.5)
    before = mask.clone()
    free_evolve(mask, ncam, ncim, 0.5)
    assert torch.equal(mask, before)


def test_upper_triangle_statistics_never_add_cycles():
    k = 6
    mask = torch.zeros(k, k, dtype=torch.bool)
    ones = torch.ones(k, k, dtype=torch.float64)
    new = free_evolve(mask, ones, torch.zeros(k, k, dtype=torch.float64), 0.1)
    assert torch.equal(new, graph.dense_mask(k))


@given(cases)
def test_theorem2_check(random_case, case):
    k, seed, density, epsilon = case
    mask, ncam, ncim = random_case(k, seed, density)
    step = decisions(mask, ncam, ncim, epsilon)
    # Aug never overlaps E or Prune, so "Aug and not Prune within E" means Aug is empty.
    assert theorem2_holds(mask, ncam, ncim, epsilon) == (not bool(step.aug.any()))
    if torch.equal(step.new_mask, mask):  # a fixed point of Algorithm 1 satisfies Theorem 2
        assert theorem2_holds(mask, ncam, ncim, epsilon)


@pytest.mark.parametrize(
    "bad",
    [
        lambda m, a, i: (m.to(torch.float32), a, i, 0.5),  # not bool
        lambda m, a, i: (m | torch.eye(m.shape[0], dtype=torch.bool), a, i, 0.5),  # self-loops
        lambda m, a, i: (m, a[:-1], i, 0.5),  # shape mismatch
        lambda m, a, i: (m, a, i, 0.0),  # epsilon outside (0, 1)
        lambda m, a, i: (m, a, i, 1.0),
    ],
)
def test_free_evolve_rejects_bad_input(random_case, bad):
    mask, ncam, ncim = random_case(5, 0, 0.5)
    with pytest.raises(ValueError):
        free_evolve(*bad(mask, ncam, ncim))


def test_decisions_match_table_1():
    # Two neurons, 0 before 1: the eight rows of the paper's Table 1.
    mask_on = torch.tensor([[False, False], [True, False]])
    mask_off = torch.zeros(2, 2, dtype=torch.bool)
    high = torch.full((2, 2), 0.9, dtype=torch.float64)
    low = torch.full((2, 2), 0.1, dtype=torch.float64)
    epsilon = 0.25
    # Co-inactive and connected: prune.
    assert not decisions(mask_on, low, high, epsilon).new_mask[1, 0]
    # Co-active and not connected: add.
    assert decisions(mask_off, high, low, epsilon).new_mask[1, 0]
    # Neither: keep as is.
    assert decisions(mask_on, low, low, epsilon).new_mask[1, 0]
    assert not decisions(mask_off, low, low, epsilon).new_mask[1, 0]


def test_layered_mask_and_depth():
    mask = graph.layered_mask([3, 2, 4])
    assert graph.is_valid_mask(mask)
    assert graph.n_edges(mask) == 3 * 2 + 2 * 4
    assert graph.depth(mask) == 3
    assert graph.depth(graph.dense_mask(5)) == 5
    assert graph.density(graph.dense_mask(1)) == 1.0
