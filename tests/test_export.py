"""Export: networkx, GraphML and DOT graphs, to_sequential, the compact model and ONNX."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import networkx as nx
import pytest
import torch
from torch import nn

from freenets import graph
from freenets.export import (
    CompactFreeNet,
    export_onnx,
    onnx_max_abs_diff,
    to_dot,
    to_networkx,
    to_sequential,
    write_dot,
    write_graphml,
)
from freenets.model import FreeNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def random_model(random_mask):
    """``random_model(n_neurons, density, seed, in_features=6, out_features=3)``: a pruned FreeNet."""

    def build(
        n_neurons: int, density: float, seed: int, in_features: int = 6, out_features: int = 3
    ) -> FreeNet:
        generator = torch.Generator().manual_seed(seed)
        model = FreeNet(in_features, n_neurons, out_features, generator=generator)
        with torch.no_grad():
            model.mask &= random_mask(n_neurons, density, generator)
        return model

    return build


MODELS = [(1, 1.0, 0), (2, 1.0, 1), (5, 0.0, 2), (8, 1.0, 3), (12, 0.4, 4), (20, 0.2, 5)]


@pytest.mark.parametrize(("n_neurons", "density", "seed"), MODELS)
def test_to_networkx_has_every_neuron_and_active_edge(n_neurons, density, seed, random_model):
    model = random_model(n_neurons, density, seed)
    described = to_networkx(model)
    assert sorted(described.nodes) == list(range(n_neurons))
    assert described.number_of_edges() == model.n_edges
    levels = graph.levels(model.mask).tolist()
    for j in range(n_neurons):
        assert described.nodes[j]["level"] == levels[j]
        assert described.nodes[j]["bias"] == pytest.approx(float(model.encoder.bias.detach()[j]))
        for i in range(n_neurons):
            if model.mask[j, i]:
                assert described.edges[i, j]["weight"] == float(model.weight.detach()[j, i])
            else:
                assert not described.has_edge(i, j)
    assert nx.is_directed_acyclic_graph(described)
    assert described.graph["out_features"] == 3


def test_graphml_round_trips_through_networkx(tmp_path, random_model):
    model = random_model(10, 0.5, 7)
    path = tmp_path / "model.graphml"
    write_graphml(model, path)
    loaded = nx.read_graphml(path, node_type=int)
    original = to_networkx(model)
    assert set(loaded.edges) == set(original.edges)
    for i, j, weight in original.edges(data="weight"):
        assert loaded.edges[i, j]["weight"] == weight  # written with repr, read back exactly
    assert [loaded.nodes[n]["level"] for n in sorted(loaded)] == graph.levels(model.mask).tolist()


def test_dot_lists_every_edge_once_and_ranks_levels(tmp_path, random_model):
    model = random_model(9, 0.5, 8)
    text = to_dot(model)
    edges = re.findall(r"n(\d+) -> n(\d+) \[label=\"([^\"]+)\"", text)
    expected = {(i, j) for j, i in model.mask.nonzero().tolist()}
    assert {(int(i), int(j)) for i, j, _ in edges} == expected
    assert len(edges) == model.n_edges
    for i, j, label in edges:
        assert float(label) == pytest.approx(float(model.weight.detach()[int(j), int(i)]), rel=1e-3)
    assert text.count("rank=same") == graph.depth(model.mask)
    assert text.count("{") == text.count("}")
    write_dot(model, tmp_path / "model.dot")
    assert (tmp_path / "model.dot").read_text() == text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_accepts_the_dot_file(tmp_path, random_model):
    write_dot(random_model(6, 0.7, 9), tmp_path / "model.dot")
    subprocess.run(["dot", "-Tsvg", str(tmp_path / "model.dot")], check=True, capture_output=True)


# ---------------------------------------------------------------------- to_sequential


def random_mlp(widths: list[int], seed: int, in_features: int = 5, out_features: int = 4):
    generator = torch.Generator().manual_seed(seed)
    sizes = [in_features, *widths, out_features]
    modules: list[nn.Module] = []
    for before, after in zip(sizes[:-1], sizes[1:], strict=True):
        linear = nn.Linear(before, after)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(after, before, generator=generator))
            linear.bias.copy_(torch.randn(after, generator=generator))
        modules += [linear, nn.ReLU()]
    return nn.Sequential(*modules[:-1])


@pytest.mark.parametrize("widths", [[3], [4, 2], [3, 5, 2], [1, 1, 1, 1]])
def test_to_sequential_inverts_from_sequential(widths):
    mlp = random_mlp(widths, seed=len(widths))
    back = to_sequential(FreeNet.from_sequential(mlp))
    assert [type(m) for m in back] == [type(m) for m in mlp]
    for original, recovered in zip(
        mlp.state_dict().values(), back.state_dict().values(), strict=True
    ):
        assert torch.equal(original, recovered)


def test_to_sequential_keeps_outputs_after_pruning_between_layers():
    mlp = random_mlp([4, 3], seed=0)
    model = FreeNet.from_sequential(mlp)
    with torch.no_grad():
        model.mask[5, 0] = False  # drop one edge between the two hidden layers
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    back = to_sequential(model)
    torch.testing.assert_close(back(x), model(x))
    assert back[2].weight[1, 0] == 0.0


def test_to_sequential_refuses_skips_with_the_reason():
    model = FreeNet.from_sequential(random_mlp([2, 2, 2], seed=1))
    with torch.no_grad():
        model.mask[4, 0] = True  # level 0 -> level 2
    with pytest.raises(ValueError, match="edge 0 -> 4 joins level 0 to level 2"):
        to_sequential(model)
    dense = FreeNet(5, 4, 2)
    with pytest.raises(ValueError, match="not layered"):
        to_sequential(dense)


def test_to_sequential_refuses_input_and_decoder_skips():
    model = FreeNet.from_sequential(random_mlp([2, 2], seed=2))
    with torch.no_grad():
        model.encoder.weight[3, 0] = 0.5
    with pytest.raises(ValueError, match="neuron 3 \\(level 1\\) reads the input"):
        to_sequential(model)
    model = FreeNet.from_sequential(random_mlp([2, 2], seed=2))
    with torch.no_grad():
        model.decoder.weight[0, 1] = 0.5
    with pytest.raises(ValueError, match="decoder reads neuron 1"):
        to_sequential(model)
    stem = FreeNet(4, 3, 2, encoder=nn.Sequential(nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="encoder is nn.Linear"):
        to_sequential(stem)


def test_a_graph_without_edges_is_one_hidden_layer(random_model):
    model = random_model(4, 0.0, 3)
    back = to_sequential(model)
    assert len(back) == 3
    x = torch.randn(8, 6)
    torch.testing.assert_close(back(x), model(x))


# ---------------------------------------------------------------------- compact model and ONNX


@pytest.mark.parametrize(("n_neurons", "density", "seed"), MODELS)
def test_compact_model_computes_what_the_freenet_computes(n_neurons, density, seed, random_model):
    model = random_model(n_neurons, density, seed)
    compact = CompactFreeNet(model)
    x = torch.randn(33, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(compact(x), model(x), rtol=1e-5, atol=1e-6)
    assert len(compact.widths) == graph.depth(model.mask)
    # Only active edges are stored: the per-level blocks hold at least every edge, far fewer
    # entries than k * k for sparse graphs.
    stored = sum(getattr(compact, f"weight{level}").numel() for level in range(len(compact.widths)))
    assert stored >= model.n_edges
    assert model.weight.requires_grad and model.encoder.weight.requires_grad


def conv_stem(n_neurons: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 14 * 14, n_neurons),
    )


onnx_extra = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime")),
    reason="the onnx extra is not installed",
)


@onnx_extra
@pytest.mark.parametrize(
    ("n_neurons", "density", "seed"), [(1, 1.0, 0), (12, 1.0, 1), (30, 0.3, 2)]
)
def test_onnx_outputs_equal_pytorch(tmp_path, n_neurons, density, seed, random_model):
    model = random_model(n_neurons, density, seed, in_features=10)
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    for batch in (1, 7, 256):  # the batch axis is dynamic
        x = torch.randn(batch, 10, generator=torch.Generator().manual_seed(batch))
        assert onnx_max_abs_diff(model, path, x) <= 1e-5


@onnx_extra
def test_onnx_export_with_a_convolutional_stem(tmp_path, random_mask):
    model = FreeNet(784, 16, 10, encoder=conv_stem(16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.mask &= random_mask(16, 0.5, 1)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="example input"):
        export_onnx(model, tmp_path / "stem.onnx")
    export_onnx(model, tmp_path / "stem.onnx", example=x[:1])
    assert onnx_max_abs_diff(model, tmp_path / "stem.onnx", x) <= 1e-5


def test_missing_onnx_extra_gives_one_clear_message(tmp_path, monkeypatch, random_model):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=re.escape("pip install 'freenets[onnx]'")):
        export_onnx(random_model(3, 1.0, 0), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


# ---------------------------------------------------------------------- run directories


def test_every_run_directory_holds_the_graph(tmp_path):
    from freenets.data import load_digits
    from freenets.experiments.runs import load_model, train_run
    from freenets.training.config import TrainConfig

    config = TrainConfig.of(n_neurons=6, epochs=2, seed=0)
    train_run(config, load_digits(), tmp_path, show_progress=False)
    model = load_model(tmp_path / "freeevolve.pt")
    loaded = nx.read_graphml(tmp_path / "freeevolve.graphml", node_type=int)
    assert set(loaded.edges) == set(to_networkx(model).edges)
    assert (tmp_path / "freeevolve.dot").read_text() == to_dot(model)


@onnx_extra
def test_onnx_of_a_trained_model_is_as_accurate_as_pytorch(tmp_path):
    from sklearn.datasets import load_digits

    from freenets import FreeNetClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    model = FreeNetClassifier(epsilon=0.5, max_iter=8, random_state=0).fit(x, y).model_
    inputs = torch.from_numpy(x)
    export_onnx(model, tmp_path / "trained.onnx")
    difference = onnx_max_abs_diff(model, tmp_path / "trained.onnx", inputs)
    with torch.no_grad():
        largest = float(model(inputs).abs().max())
    # Trained logits reach tens, where one float32 step is ~4e-6: compare at 1e-5 relative.
    assert difference <= 1e-5 * max(1.0, largest)
