"""The weight's gradient and Adam's moments on the active edges only (``sparse_grad=True``).

Every kernel's sparse gradient against the per-neuron reference loop; :class:`EdgeAdam` against
torch's Adam on a FreeNet whose graph changes (edges pruned, added and renewed through
``apply_mask``); checkpoints and the command line's ``--sparse-grad``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_runs import TOY_CONFIG, StopAfter, assert_same_results, run_results, toy_dataset

from freenets import FreeNet
from freenets.errors import ConfigError, Interrupted
from freenets.experiments import runs
from freenets.kernels import cpu as kernels_cpu
from freenets.kernels import dag_activations, reference_activations, threads
from freenets.training.checkpoint import check_body, data_shape
from freenets.training.config import TrainConfig
from freenets.training.optim import EdgeAdam, default_optimizer, load_optimizer
from freenets.training.topology import apply_mask

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def gradients(z, weight, mask, grad_h, **options):
    """``(dL/dz, dL/dW)`` of ``sum(h * grad_h)`` through ``dag_activations``."""
    z = z.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    h = dag_activations(z, weight, mask, **options)
    h.backward(grad_h)
    return z.grad, weight.grad


@pytest.mark.parametrize("method", ["auto", "dense", "sparse", "levels"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=10)
@given(
    k=st.integers(1, 40),
    batch=st.integers(1, 70),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_sparse_gradient_holds_every_edge_and_equals_the_reference(
    method, dtype, k, batch, density, seed, random_mask
):
    generator = torch.Generator().manual_seed(seed)
    mask = random_mask(k, density, generator)
    z = torch.randn(batch, k, generator=generator, dtype=torch.float64)
    weight = torch.randn(k, k, generator=generator, dtype=torch.float64) / k**0.5
    grad_h = torch.randn(batch, k, generator=generator, dtype=torch.float64)
    inputs = (z.clone().requires_grad_(True), weight.clone().requires_grad_(True))
    h = reference_activations(*inputs, mask)
    expected_z, expected_w = torch.autograd.grad(
        h, inputs, grad_h, allow_unused=True, materialize_grads=True
    )
    grad_z, grad_w = gradients(
        z.to(dtype), weight.to(dtype), mask, grad_h.to(dtype), method=method, sparse_grad=True
    )
    if method == "auto" and not mask.any():  # a graph without edges: no weight gradient
        assert grad_w is None
        return
    assert grad_w.is_sparse and grad_w.dtype == dtype and grad_w.shape == (k, k)
    # Every active edge, and nothing else, in row-major order.
    assert torch.equal(grad_w._indices(), torch.stack(mask.nonzero(as_tuple=True)))
    for found, expected in ((grad_w.to_dense(), expected_w), (grad_z, expected_z)):
        scale = max(1.0, float(expected.abs().max()))
        assert float((found.double() - expected).abs().max()) <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("partial_bytes", [0, 10**9])  # a second pass, or in the backward's
@pytest.mark.parametrize("tile_cache_bytes", [1, 10**9])  # narrow tiles, wide tiles
@pytest.mark.parametrize("runner", ["openmp", "pool"])
def test_the_edge_gradient_is_the_same_on_one_thread_and_two(
    runner, tile_cache_bytes, partial_bytes, random_mask
):
    """The edges' gradient split between threads gives the reference's, bit for bit the same
    whatever the thread count, in narrow tiles and in wide ones, computed in the backward's
    pass over the edges or in a pass of its own."""
    generator = torch.Generator().manual_seed(5)
    k, batch = 90, 70
    mask = random_mask(k, 0.3, generator)
    z, grad_h = (
        torch.randn(batch, k, generator=generator),
        torch.randn(batch, k, generator=generator),
    )
    weight = torch.randn(k, k, generator=generator) / k**0.5
    reference_w = weight.double().requires_grad_(True)
    reference_activations(z.double(), reference_w, mask).backward(grad_h.double())
    found = {}
    count = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threads, "PARALLEL_WORK", 0)
        patch.setattr(threads, "USE_OPENMP", runner == "openmp")
        patch.setattr(kernels_cpu, "_TILE_CACHE_BYTES", tile_cache_bytes)
        patch.setattr(kernels_cpu, "_PARTIAL_BYTES", partial_bytes)
        try:
            for threads_now in (1, 2):
                torch.set_num_threads(threads_now)
                found[threads_now] = gradients(
                    z, weight, mask, grad_h, method="sparse", sparse_grad=True
                )[1]
        finally:
            torch.set_num_threads(count)
    assert torch.equal(found[1]._values(), found[2]._values())
    torch.testing.assert_close(found[1].to_dense().double(), reference_w.grad, rtol=0, atol=1e-4)


def _twins(k=12, seed=0):
    """Two identical FreeNets, the second with a sparse weight gradient."""
    dense = FreeNet(5, k, 3, generator=torch.Generator().manual_seed(seed))
    sparse = FreeNet(5, k, 3, generator=torch.Generator().manual_seed(seed), sparse_grad=True)
    return dense, sparse


@pytest.mark.parametrize("fused", [False, True])
def test_edge_adam_trains_as_adam_while_the_graph_changes(fused, random_mask):
    """Edges pruned, added back (their stored weight restored) and renewed, through
    apply_mask: the weights on the graph and every other parameter follow torch's Adam to
    rounding, and the state never holds a (k, k) tensor."""
    dense, sparse = _twins()
    adam = torch.optim.Adam(
        [{"params": [p for n, p in dense.named_parameters() if n != "weight"]},
         {"params": [dense.weight]}], lr=0.01, fused=fused,
    )  # fmt: skip
    edge = EdgeAdam(
        [{"params": [p for n, p in sparse.named_parameters() if n != "weight"]},
         {"params": [sparse.weight]}], lr=0.01, fused=fused,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    masks = [random_mask(12, 0.4, generator) for _ in range(3)]
    x = torch.rand(40, 5, generator=generator)
    y = torch.randint(0, 3, (40,), generator=generator)
    for step in range(12):
        if step in (3, 6, 9):
            new = masks[step // 3 - 1]
            renew = dense.mask & new & (torch.rand(12, 12, generator=generator) < 0.3)
            for model, optimizer in ((dense, adam), (sparse, edge)):
                apply_mask(model, new, optimizer, renew=renew)
        for model, optimizer in ((dense, adam), (sparse, edge)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    on_graph = dense.mask
    torch.testing.assert_close(sparse.weight[on_graph], dense.weight[on_graph], rtol=0, atol=1e-6)
    for name in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"):
        found, expected = sparse.get_parameter(name), dense.get_parameter(name)
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-6)
    state = edge.state[sparse.weight]
    assert state["index"].dtype == torch.int64
    assert state["exp_avg"].shape == (int(sparse.mask.sum()),)
    assert all(v.shape != (12, 12) for v in state.values())


def test_edge_adam_checks_a_gradients_positions_once_while_they_stay(monkeypatch):
    """The gradient's edge list, the same tensor every step while the graph stays, is read once;
    a new graph's list, an edit to the list in place and a copied optimiser are checked again,
    and every step lands where torch's Adam puts it."""
    dense, sparse = _twins()
    adam = torch.optim.Adam(dense.parameters(), lr=0.01)
    edge = EdgeAdam(sparse.parameters(), lr=0.01)
    calls = []
    same = EdgeAdam._same_positions
    monkeypatch.setattr(
        EdgeAdam, "_same_positions", staticmethod(lambda *a: calls.append(1) or same(*a))
    )
    x = torch.rand(20, 5, generator=torch.Generator().manual_seed(5))
    y = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(6))

    def step(optimizers=((dense, adam), (sparse, edge))):
        for model, optimizer in optimizers:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

    for _ in range(4):
        step()
    assert len(calls) == 1  # the first step sets the moments' positions; the second checks
    new = dense.mask.clone()
    new[new.nonzero()[0].tolist()] = False
    for model, optimizer in ((dense, adam), (sparse, edge)):
        apply_mask(model, new, optimizer)
    for _ in range(3):
        step()
    # The new graph's list differs from the moments' positions (apply_mask leaves those): the
    # moments follow it, and the next step checks it once.
    assert len(calls) == 3
    sparse.weight.grad._indices().add_(0)  # an edit in place moves the version
    edge._sparse_update(sparse.weight, sparse.weight.grad, edge.param_groups[0])
    adam.step()
    assert len(calls) == 4
    copied = copy.deepcopy(edge)  # copies its parameters, without their gradients
    for mine, theirs in zip(copied.param_groups[0]["params"], sparse.parameters(), strict=True):
        mine.grad = theirs.grad.clone()
    copied.step()  # the copy's record of checked lists starts empty
    assert len(calls) == 5
    torch.testing.assert_close(sparse.weight[new], dense.weight[new], rtol=0, atol=1e-6)


def test_edge_adam_steps_a_bfloat16_weight_as_adam():
    """A dtype the compiled pass does not take (bfloat16, through the levels method) is stepped
    by torch's own indexing: the same weights as Adam on the dense gradient, to bfloat16's
    rounding."""
    dense, sparse = (model.to(torch.bfloat16) for model in _twins())
    adam = torch.optim.Adam(dense.parameters(), lr=0.01)
    edge = EdgeAdam(sparse.parameters(), lr=0.01)
    x = torch.rand(20, 5, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(4))
    for _ in range(3):
        for model, optimizer in ((dense, adam), (sparse, edge)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x).float(), y).backward()
            optimizer.step()
    assert sparse.weight.grad.is_sparse
    torch.testing.assert_close(sparse.weight, dense.weight, rtol=0, atol=1e-2)
    assert not torch.equal(sparse.weight, _twins()[1].weight.to(torch.bfloat16))


def test_edge_adam_goes_on_from_its_state_dict():
    """Saved and loaded midway (through the training loop's checked loader), EdgeAdam goes on
    exactly as it would have; its index stays integers."""
    config = TrainConfig.of(n_neurons=10, sparse_grad=True)
    x, y = torch.rand(30, 4), torch.randint(0, 3, (30,))

    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

    whole = FreeNet(4, 10, 3, generator=torch.Generator().manual_seed(2), sparse_grad=True)
    optimizer = default_optimizer(whole, config)
    assert isinstance(optimizer, EdgeAdam)
    train(whole, optimizer, 3)
    saved_model = {k: v.clone() for k, v in whole.state_dict().items()}
    saved = copy.deepcopy(optimizer.state_dict())  # its tensors are the live state
    train(whole, optimizer, 3)
    again = FreeNet(4, 10, 3, sparse_grad=True)
    again.load_state_dict(saved_model)
    resumed = default_optimizer(again, config)
    load_optimizer(resumed, saved, steps=3)
    assert resumed.state[again.weight]["index"].dtype == torch.int64
    train(again, resumed, 3)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    broken = optimizer.state_dict()
    broken["state"][4]["index"] = broken["state"][4]["index"].flip(0)
    with pytest.raises(ValueError, match="'index' does not fit"):
        load_optimizer(default_optimizer(FreeNet(4, 10, 3, sparse_grad=True), config), broken, 6)


def test_a_run_with_sparse_gradients_matches_the_dense_one_and_resumes_bit_identically(tmp_path):
    config = TOY_CONFIG.replace(sparse_grad=True)
    whole = tmp_path / "whole"
    runs.train_run(config, toy_dataset(), whole, show_progress=False)
    assert json.loads((whole / "config.json").read_text())["sparse_grad"] is True
    assert runs.read_config(whole) == config
    dense = tmp_path / "dense"
    runs.train_run(TOY_CONFIG, toy_dataset(), dense, show_progress=False)
    a, b = run_results(whole), run_results(dense)
    assert a["summary"]["freeevolve"]["edges"] == b["summary"]["freeevolve"]["edges"]
    for key in ("test_accuracy", "val_accuracy"):
        assert a["summary"]["freeevolve"][key] == pytest.approx(b["summary"]["freeevolve"][key])
    torch.testing.assert_close(a["freenet"]["weight"], b["freenet"]["weight"], rtol=0, atol=1e-5)
    for calls in (9, 30):
        part = tmp_path / f"stopped-{calls}"
        with pytest.raises(Interrupted):
            runs.train_run(
                config, toy_dataset(), part, show_progress=False, should_stop=StopAfter(calls)
            )
        runs.train_run(config, toy_dataset(), part, show_progress=False, resume=True)
        assert_same_results(run_results(part), a)


def test_a_checkpoint_from_before_the_setting_goes_on():
    """A checkpoint whose configuration predates ``sparse_grad`` holds its default."""
    config = TOY_CONFIG.to_dict()
    older = {key: value for key, value in config.items() if key != "sparse_grad"}
    shape = data_shape(6, 3, 216)
    body = {"config": older, "data": shape, "phase": "freeevolve", "fit": {}, "freeevolve": None}
    assert check_body(body, config, shape) is body
    with pytest.raises(Exception, match="sparse_grad"):
        check_body(body, {**config, "sparse_grad": True}, shape)


def test_sparse_gradients_refuse_weight_decay_and_the_cli_takes_the_flag(
    tmp_path, run_cli, one_error_line
):
    with pytest.raises(ConfigError, match="--sparse-grad takes no weight decay"):
        TrainConfig.of(sparse_grad=True, weight_decay=0.1).validate()
    out = tmp_path / "run"
    result = run_cli(
        [
            "train",
            "--neurons",
            "6",
            "--epochs",
            "1",
            "--sparse-grad",
            "--quiet",
            "--no-figures",
            "--out",
            str(out),
        ]  # fmt: skip
    )
    assert result.code == 0, result.err
    assert json.loads((out / "config.json").read_text())["sparse_grad"] is True
    bad = run_cli(["train", "--sparse-grad=yes", "--out", str(tmp_path / "x")])
    assert bad.code != 0 and one_error_line(bad.err)
