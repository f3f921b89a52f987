"""FreeEvolve's step from packed firing (``sparse_step``) against the full NCAM/NCIM matrices.

The graph and the record (edge counts and the sampled NCIM/NCAM values of Figure 7) must equal
those of :func:`decisions` on :func:`coactivation`'s matrices bit for bit, on random models and
on firing patterns built to sit exactly at the threshold.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freenets import FreeNet, coactivation, graph
from freenets.rules.freeevolve import (
    FreeEvolveRule,
    _absent_positions,
    _sample_values,
    decisions,
    sparse_step,
)
from freenets.stats import firing


def dense_step(mask, model, x, epsilon, limit):
    """The record and graph as the matrices give them: the definition ``sparse_step`` keeps."""
    ncam, ncim = coactivation(model, x, batch_size=37)
    result = decisions(mask, ncam, ncim, epsilon)
    allowed = graph.lower_triangle(mask.shape[0])
    return result.new_mask, {
        "edges": graph.n_edges(result.new_mask),
        "added": int((result.new_mask & ~mask).sum()),
        "pruned": int((mask & ~result.new_mask).sum()),
        "prune_values": _sample_values(ncim[mask], limit),
        "aug_values": _sample_values(ncam[allowed & ~mask], limit),
    }


def as_dict(record):
    return {
        "edges": record.edges,
        "added": record.added,
        "pruned": record.pruned,
        "prune_values": record.prune_values,
        "aug_values": record.aug_values,
    }


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 30),
    n=st.integers(1, 200),
    density=st.sampled_from([0.0, 0.2, 0.7, 1.0]),
    epsilon=st.sampled_from([0.05, 0.25, 0.5, 0.75, 0.95]),
    bias=st.sampled_from([-1.0, 0.0, 1.0]),
    limit=st.sampled_from([0, 3, 5000]),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_sparse_step_equals_the_matrices(
    k, n, density, epsilon, bias, limit, seed, random_mask
):
    generator = torch.Generator().manual_seed(seed)
    model = FreeNet(4, k, 2, generator=generator)
    with torch.no_grad():
        model.encoder.bias.add_(bias)  # many neurons firing, or few
        model.mask.copy_(random_mask(k, density, generator))
    x = torch.randn(n, 4, generator=generator)
    mask = model.mask.clone()
    expected_mask, expected = dense_step(mask, model, x, epsilon, limit)
    new_mask, record = sparse_step(mask, firing(model, x, batch_size=23), epsilon, limit)
    assert torch.equal(new_mask, expected_mask)
    assert as_dict(record) == expected


@pytest.mark.parametrize("epsilon", [0.25, 0.5])
def test_pairs_exactly_at_the_threshold_neither_add_nor_prune(epsilon):
    """Neurons 0 and 1 fire together on exactly 1 - epsilon of the samples, neurons 2 and 3 are
    silent together on exactly that fraction: strict inequalities, as the matrices have them."""
    n = 8
    share = round((1 - epsilon) * n)
    s = torch.zeros(n, 4)
    s[:share, 0] = s[:share, 1] = 1.0  # both fire on `share` samples
    s[share:, 2] = s[share:, 3] = 1.0  # both silent on `share` samples
    model = FreeNet(4, 4, 1).double()
    with torch.no_grad():
        model.encoder.weight.copy_(torch.eye(4))
        model.encoder.bias.zero_()
        model.mask.zero_()
        model.mask[3, 2] = True
    mask = model.mask.clone()
    expected_mask, expected = dense_step(mask, model, s.double(), epsilon, 5000)
    new_mask, record = sparse_step(mask, firing(model, s.double()), epsilon, 5000)
    assert torch.equal(new_mask, expected_mask) and as_dict(record) == expected
    assert torch.equal(new_mask, mask)  # nothing crosses a strict threshold


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 25),
    density=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_absent_positions_are_found_by_rank_without_listing_them(k, density, seed, random_mask):
    mask = random_mask(k, density, torch.Generator().manual_seed(seed))
    absent = (graph.lower_triangle(k) & ~mask).nonzero(as_tuple=True)
    rows, cols = mask.nonzero(as_tuple=True)
    j, i = _absent_positions(rows, cols, k, torch.arange(absent[0].numel()))
    assert torch.equal(j, absent[0]) and torch.equal(i, absent[1])


def test_the_rule_steps_as_the_matrices_say():
    """FreeEvolveRule's step (through the packed firing) against the matrices, round after round."""
    generator = torch.Generator().manual_seed(0)
    model = FreeNet(5, 20, 3, generator=generator)
    x = torch.randn(64, 5, generator=generator)
    rule = FreeEvolveRule(0.5, value_limit=40)
    for _ in range(3):
        expected_mask, expected = dense_step(model.mask.clone(), model, x, 0.5, 40)
        new_mask, record = rule.step(model, x)
        assert torch.equal(new_mask, expected_mask) and as_dict(record) == expected
        with torch.no_grad():
            model.mask.copy_(new_mask)
            model.weight.mul_(0.5)  # other activations next round


def test_firing_of_a_bfloat16_model_counts_as_coactivation_does():
    generator = torch.Generator().manual_seed(4)
    model = FreeNet(4, 9, 2, generator=generator).to(torch.bfloat16)
    x = torch.randn(50, 4, generator=generator).to(torch.bfloat16)
    ncam, ncim = coactivation(model, x)
    counted = firing(model, x)
    rows, cols = torch.tril_indices(9, 9)
    assert torch.equal(counted.ncam(rows, cols), ncam[rows, cols])
    assert torch.equal(counted.ncim(rows, cols), ncim[rows, cols])
