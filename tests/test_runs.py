"""A run directory's saved FreeNet: load_model checks what it reads and rebuilds it whole."""

from __future__ import annotations

import pytest
import torch

from freenets import FreeNet, graph
from freenets.experiments.runs import load_model, save_model


def saved(tmp_path, **sizes):
    model = FreeNet(5, 6, 3, bias_bound=0.5, generator=torch.Generator().manual_seed(0), **sizes)
    model.mask.copy_(graph.layered_mask([3, 3]))
    path = tmp_path / "freeevolve.pt"
    save_model(path, model)
    return model, path


def test_load_model_gives_back_the_weights_the_graph_and_the_bias_bound(tmp_path):
    model, path = saved(tmp_path)
    loaded = load_model(path)
    assert loaded.bias_bound == 0.5
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(4, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(x), model(x))


def test_load_model_refuses_a_mask_that_is_no_dag(tmp_path):
    """Checkpoints refuse such a mask; a saved model must too, not load a cyclic 'graph'."""
    _, path = saved(tmp_path)
    content = torch.load(path, weights_only=True)
    content["state_dict"]["mask"] = torch.ones(6, 6, dtype=torch.bool)  # self-loops, cycles
    torch.save(content, path)
    with pytest.raises(ValueError, match="strictly lower-triangular"):
        load_model(path)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["state_dict"].update(weight=torch.zeros(6, 6, dtype=torch.float64)),
        lambda c: c["state_dict"].pop("weight"),
        lambda c: c.pop("n_neurons"),
        lambda c: c.update(n_neurons=0),
        lambda c: c.update(bias_bound=-1.0),
    ],
)
def test_load_model_refuses_a_damaged_file_in_one_line(tmp_path, change):
    _, path = saved(tmp_path)
    content = torch.load(path, weights_only=True)
    change(content)
    torch.save(content, path)
    with pytest.raises(ValueError, match=f"{path}") as caught:
        load_model(path)
    assert "\n" not in str(caught.value)


def test_a_model_saved_before_the_bias_bound_was_loads_with_the_default(tmp_path):
    model, path = saved(tmp_path)
    content = torch.load(path, weights_only=True)
    del content["bias_bound"]
    torch.save(content, path)
    assert load_model(path).bias_bound == 0.1
