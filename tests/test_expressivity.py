"""Theorem 1's experiment: the batched substrate against the reference recurrence, the layered
splits, the hand-set constructions, the CSV and the `freenets expressivity` command."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from freenets.experiments import expressivity
from freenets.experiments.expressivity import (
    COLUMNS,
    ExpressivityConfig,
    Row,
    format_rows,
    read_rows,
    run_expressivity,
    smallest_k,
)
from freenets.experiments.expressivity_constructions import (
    constructions,
    parity_freenet,
    parity_single_layer,
    sawtooth_freenet,
    sawtooth_layered,
    score,
)
from freenets.experiments.expressivity_nets import (
    BatchedRecurrence,
    NetBatch,
    TrainSettings,
    evaluate,
    freenet_topology,
    layered_splits,
    layered_topology,
    topologies,
    train,
)
from freenets.experiments.expressivity_tasks import (
    parity_task,
    polynomial_task,
    sawtooth_task,
    tent_power,
)
from freenets.kernels import reference_activations
from freenets.model import FreeNet
from freenets.reporting.expressivity import expressivity_figure, expressivity_markdown

# One torch thread, as the runner uses: tiny batches only wait on a second busy core.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ExpressivityConfig(
    parity_bits=(2,),
    sawtooth_levels=(1,),
    polynomial_degrees=(1,),
    max_neurons=3,
    restarts=2,
    steps=40,
)


def random_batch(k: int, m: int, d: int, seed: int) -> NetBatch:
    generator = torch.Generator().manual_seed(seed)
    wirings = [freenet_topology(k)] * m
    nets = NetBatch.initialise(wirings, d, generator=generator, dtype=torch.float64)
    # random sub-graphs and random input/output masks, so every mask is exercised
    nets.edges = nets.edges & (torch.rand(m, k, k, generator=generator) < 0.6)
    nets.inputs = torch.rand(m, k, generator=generator) < 0.7
    nets.outputs = torch.rand(m, k, generator=generator) < 0.7
    return nets


# ------------------------------------------------------------------- substrate vs reference


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_batched_forward_and_gradients_equal_the_reference_recurrence(k):
    m, batch, d = 4, 6, 3
    nets = random_batch(k, m, d, seed=k)
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(100 + k), dtype=torch.float64)
    for tensor in nets.parameters():
        tensor.requires_grad_(True)
    output = nets.forward(x)  # (M, B)
    assert output.shape == (m, batch)
    grads = torch.autograd.grad(output.square().sum(), nets.parameters())
    for index in range(m):
        # the same network through FreeNet's reference recurrence, autograd all the way
        encoder_weight = nets.encoder_weight[index].detach().clone().requires_grad_(True)
        encoder_bias = nets.encoder_bias[index].detach().clone().requires_grad_(True)
        weight = nets.weight[index].detach().clone().requires_grad_(True)
        decoder_weight = nets.decoder_weight[index].detach().clone().requires_grad_(True)
        decoder_bias = nets.decoder_bias[index].detach().clone().requires_grad_(True)
        z = x @ (encoder_weight * nets.inputs[index, :, None]).t() + encoder_bias
        h = reference_activations(z, weight, nets.edges[index])
        expected = h @ (decoder_weight * nets.outputs[index]) + decoder_bias
        torch.testing.assert_close(output[index], expected)
        own = torch.autograd.grad(
            expected.square().sum(),
            [encoder_weight, encoder_bias, weight, decoder_weight, decoder_bias],
            allow_unused=True,  # k = 1 has no edge: the reference never reads the weight
        )
        for batched, single in zip(grads, own, strict=True):
            expected_grad = torch.zeros_like(batched[index]) if single is None else single
            torch.testing.assert_close(batched[index], expected_grad)
        # and through the FreeNet module itself
        module = nets.network(index)
        torch.testing.assert_close(module(x)[:, 0], output[index].detach())


def test_the_recurrence_passes_gradcheck():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(BatchedRecurrence.apply, (z, weight))


def test_masked_weights_get_no_gradient_and_do_not_move():
    nets = NetBatch.initialise(
        [layered_topology([2, 1, 2])] * 3, 2, generator=torch.Generator().manual_seed(1)
    )
    before = [tensor.clone() for tensor in nets.parameters()]
    x = torch.rand(16, 2, generator=torch.Generator().manual_seed(2))
    train(nets, x, x[:, 0], "regression", 1e-12, TrainSettings(steps=20))
    edges = nets.edges
    assert torch.equal(nets.weight[~edges], before[2][~edges])
    assert torch.equal(nets.encoder_weight[~nets.inputs], before[0][~nets.inputs])
    assert torch.equal(nets.decoder_weight[~nets.outputs], before[3][~nets.outputs])
    assert not torch.equal(nets.weight[edges], before[2][edges])


# ------------------------------------------------------------------------- layered topologies


@pytest.mark.parametrize("k", range(1, 8))
def test_every_layered_split_appears_exactly_once(k):
    splits = layered_splits(k)
    assert len(splits) == 2 ** (k - 1) == len(set(splits))
    assert all(sum(widths) == k and min(widths) >= 1 for widths in splits)
    wirings = topologies(k)
    assert [t.name for t in wirings] == ["freenet"] + [
        "layered:" + "-".join(map(str, widths)) for widths in splits
    ]
    for topology in wirings:
        assert not torch.triu(topology.edges).any()  # strictly lower-triangular
    for topology in wirings[1:]:
        first, last = topology.widths[0], topology.widths[-1]
        assert topology.inputs.tolist() == [True] * first + [False] * (k - first)
        assert topology.outputs.tolist() == [False] * (k - last) + [True] * last
        # each neuron below the first layer receives exactly the previous layer's width
        fan_in = topology.edges.sum(dim=1).tolist()
        expected = [0] * first
        for previous, width in zip(topology.widths[:-1], topology.widths[1:], strict=True):
            expected += [previous] * width
        assert fan_in == expected


def test_small_splits_by_hand():
    assert layered_splits(3) == [(3,), (1, 2), (2, 1), (1, 1, 1)]


def test_a_layered_topology_computes_its_mlp_as_from_sequential_builds_it():
    torch.manual_seed(0)
    widths = [2, 1, 3]
    layers: list[nn.Module] = []
    fan_in = 4
    for width in widths:
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    mlp = nn.Sequential(*layers, nn.Linear(fan_in, 1)).double()
    model = FreeNet.from_sequential(mlp)
    topology = layered_topology(widths)
    assert torch.equal(model.mask, topology.edges)
    assert torch.equal(model.encoder.weight.abs().sum(dim=1) > 0, topology.inputs)
    assert torch.equal(model.decoder.weight[0] != 0, topology.outputs)
    nets = NetBatch(
        encoder_weight=model.encoder.weight.detach()[None],
        encoder_bias=model.encoder.bias.detach()[None],
        weight=model.weight.detach()[None],
        decoder_weight=model.decoder.weight.detach()[0][None],
        decoder_bias=model.decoder.bias.detach(),
        inputs=topology.inputs[None],
        edges=topology.edges[None],
        outputs=topology.outputs[None],
    )
    x = torch.randn(10, 4, dtype=torch.float64)
    torch.testing.assert_close(nets.forward(x)[0], mlp(x)[:, 0].detach())


# ------------------------------------------------------------------------------ constructions


@pytest.mark.parametrize("n_bits", range(1, 9))
def test_parity_constructions_are_exact(n_bits):
    task = parity_task(n_bits)
    for construction in (parity_freenet(n_bits), parity_single_layer(n_bits)):
        logit = construction.nets.forward(task.inputs)[0]
        assert torch.equal((logit > 0).float(), task.targets)
        assert logit.abs().min() >= 10.0 - 1e-4  # margins, not luck at the threshold
    assert parity_single_layer(n_bits).n_neurons == n_bits


def test_parity_freenet_size_is_about_log2_of_the_bits():
    sizes = {n: parity_freenet(n).n_neurons for n in range(3, 9)}
    assert sizes == {3: 2, 4: 3, 5: 3, 6: 3, 7: 4, 8: 4}
    assert all(size <= math.ceil(math.log2(n + 1)) + 1 for n, size in sizes.items())


@pytest.mark.parametrize("levels", range(1, 6))
def test_sawtooth_constructions_are_exact(levels):
    task = sawtooth_task(levels)
    freenet, layered = sawtooth_freenet(levels), sawtooth_layered(levels)
    assert (freenet.n_neurons, layered.n_neurons) == (levels + 1, 2 * levels)
    assert layered.topology == "layered-constructed:" + "-".join(["2"] * levels)
    for construction in (freenet, layered):
        output = construction.nets.forward(task.inputs)[0]
        assert (output - task.targets).abs().max() < 1e-6


def test_tent_power_has_the_teeth_it_claims():
    x = torch.linspace(0, 1, 17, dtype=torch.float64)
    assert tent_power(x, 3)[::2].tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0]


def test_polynomial_constructions_meet_the_tolerance():
    for degree in (1, 2, 3):
        task = polynomial_task(degree)
        built = {c.topology.split(":")[0]: c for c in constructions(task, 6)}
        assert ("freenet-constructed" in built) == (degree <= 2)
        for construction in built.values():
            assert score(construction, task).loss.item() < task.tolerance
    assert score(constructions(polynomial_task(1), 3)[0], polynomial_task(1)).loss.item() < 1e-12


def test_training_finds_the_single_tent():
    task = sawtooth_task(1)
    nets = NetBatch.initialise(
        [freenet_topology(2)] * 16, 1, generator=torch.Generator().manual_seed(0), bias_bound=0.5
    )
    before = evaluate(nets, task.inputs, task.targets, task.kind).loss
    settings = TrainSettings(steps=800, learning_rate=0.02)
    after = train(nets, task.inputs, task.targets, task.kind, task.tolerance, settings)
    assert (after.loss <= before).all()
    assert (after.loss < task.tolerance).any()


# -------------------------------------------------------------------------- runner and report


def test_the_csv_has_its_columns_and_a_run_is_reproducible(tmp_path):
    first = run_expressivity(TINY, tmp_path / "a")
    second = run_expressivity(TINY, tmp_path / "b")
    text = first.csv.read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert text == second.csv.read_text()
    rows = read_rows(first.csv)
    assert format_rows(rows) == text  # reading back loses nothing the file holds
    assert [(r.task, r.k, r.topology) for r in rows] == [
        (r.task, r.k, r.topology) for r in first.rows
    ]
    # parity-2 over k = 1..3: 1 + 2 + 4 layered splits and the FreeNet at each k
    trained = [row for row in rows if row.task == "parity-2" and row.kind in ("freenet", "layered")]
    assert len(trained) <= 3 + 7 and all(row.restarts == 2 for row in trained)
    assert all(0 <= row.solved <= row.restarts for row in rows)
    regression = [row for row in rows if row.task != "parity-2"]
    assert regression and all(math.isnan(row.best_accuracy) for row in regression)
    constructed = [row for row in rows if row.kind.endswith("constructed")]
    assert constructed and all(row.solved == 1 for row in constructed)


def test_smallest_k_reads_the_first_solving_k_of_each_kind():
    def row(k, topology, solved):
        return Row("parity-4", k, topology, 4, solved, 1.0, 0.1)

    rows = [
        row(1, "freenet", 0),
        row(1, "layered:1", 0),
        row(2, "freenet", 1),
        row(2, "layered:2", 0),
        row(2, "layered:1-1", 0),
        row(3, "freenet-constructed", 1),
        row(3, "freenet", 3),
        row(3, "layered:3", 2),
        row(3, "layered:1-2", 1),
        row(3, "layered:2-1", 0),
        row(4, "layered-constructed:4", 1),
    ]
    (result,) = smallest_k(rows)
    assert (result.freenet, result.layered, result.layered_topology) == (2, 3, "3, 1-2")
    assert (result.freenet_constructed, result.layered_constructed, result.tried) == (3, 4, 3)
    markdown = expressivity_markdown(rows, TINY, 12.0)
    assert "| parity-4 | 2 | 3 (3, 1-2) | 3 | 4 | 1..3 |" in markdown
    assert "| parity-4 | 3 | 3/4 | 2/3 | 3 (2/4) |" in markdown
    figure = expressivity_figure(rows)
    (axis,) = figure.axes  # one family, one panel: the four smallest k at N = 4
    assert axis.get_title() == "parity of N bits"
    assert [line.get_ydata().tolist() for line in axis.get_lines()] == [[2], [3], [3], [4]]
    assert [round(float(line.get_xdata()[0])) for line in axis.get_lines()] == [4] * 4
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [
        "FreeNet, trained",
        "best layered, trained",
        "FreeNet, constructed",
        "layered, constructed",
    ]


def test_cli_quick_writes_csv_markdown_and_figure(tmp_path, monkeypatch, run_cli):
    monkeypatch.setattr(expressivity, "QUICK", TINY)
    out = tmp_path / "expr"
    code, printed, err = run_cli(["expressivity", "--quick", "--out", str(out), "--seed", "3"])
    assert code == 0, err
    assert "parity-2 k=1: freenet" in printed and "wall time:" in printed
    assert (out / "expressivity.csv").read_text().startswith(",".join(COLUMNS) + "\n")
    assert (out / "expressivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "expressivity.md").read_text()
    assert "| sawtooth-1 |" in markdown and "0.0001" in markdown
    assert '"seed": 3' in (out / "expressivity.json").read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["expressivity"],
        ["expressivity", "--out", "x", "--seed", "many"],
        ["expressivity", "--out", "x", "--seed", "-1"],
        ["expressivity", "--out", "x", "--fast"],
        ["expressivity", "--out", ""],
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(args)
    assert result.code == 2 and result.err.startswith("freenets: error: ")
    assert result.one_error_line() and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "x").exists()


def test_config_values_out_of_range_are_refused():
    with pytest.raises(ValueError, match="restarts"):
        replace(TINY, restarts=0).validate()
    with pytest.raises(ValueError, match="max_neurons"):
        replace(TINY, max_neurons=13).validate()
