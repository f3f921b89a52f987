"""Topology changes during training: pruned weights stay put, re-added ones come back."""

import pytest
import torch

from freenets import Evolver, FreeNet, graph
from freenets.baselines import FCNN, fcnn_params, matching_width
from freenets.data import load_digits, validation_split
from freenets.errors import ConfigError
from freenets.training.loop import adam, fit, learning_rate
from freenets.training.train import TrainConfig, run_pair


def prune_half(model):
    new_mask = model.mask.clone()
    rows, cols = new_mask.nonzero(as_tuple=True)
    new_mask[rows[::2], cols[::2]] = False
    return new_mask


def train_steps(model, optimizer, steps, generator):
    for _ in range(steps):
        x = torch.randn(16, model.in_features, generator=generator)
        y = torch.randint(0, model.out_features, (16,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.Adam(p, lr=0.01),
        lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
        lambda p: adam([{"params": list(p)}], 0.01),  # fused where torch has it, as in training
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
    ],
)
def test_pruned_weights_do_not_move(make_optimizer):
    generator = torch.Generator().manual_seed(0)
    model = FreeNet(5, 12, 3, generator=generator)
    optimizer = make_optimizer(model.parameters())
    train_steps(model, optimizer, 20, generator)  # momentum is non-zero everywhere now
    evolver = Evolver(model, 0.25, optimizer=optimizer)
    new_mask = prune_half(model)
    pruned = model.mask & ~new_mask
    evolver.apply(new_mask)
    stored = model.weight.detach().clone()
    train_steps(model, optimizer, 200, generator)
    assert torch.equal(model.weight.detach()[pruned], stored[pruned])
    assert not torch.equal(model.weight.detach()[new_mask], stored[new_mask])  # others learn


@pytest.mark.parametrize("readd", ["restore", "zero"])
def test_readded_edge_resumes_its_weight(readd):
    generator = torch.Generator().manual_seed(1)
    model = FreeNet(5, 8, 3, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_steps(model, optimizer, 5, generator)
    evolver = Evolver(model, 0.25, optimizer=optimizer, readd=readd)
    dense = model.mask.clone()
    sparse = prune_half(model)
    evolver.apply(sparse)
    stored = model.weight.detach().clone()
    train_steps(model, optimizer, 50, generator)
    evolver.apply(dense)
    returned = dense & ~sparse
    expected = stored[returned] if readd == "restore" else torch.zeros(int(returned.sum()))
    assert torch.equal(model.weight.detach()[returned], expected)


def test_decoupled_weight_decay_on_the_graph_is_refused():
    model = FreeNet(3, 4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), weight_decay=0.01)
    with pytest.raises(ValueError, match="weight_decay"):
        Evolver(model, 0.25, optimizer=optimizer)


def test_evolver_step_records_and_converges():
    generator = torch.Generator().manual_seed(2)
    model = FreeNet(4, 10, 2, generator=generator)
    x = torch.randn(200, 4, generator=generator)
    evolver = Evolver(model, 0.5, patience=2)
    steps = [evolver.step(x) for _ in range(6)]
    assert graph.is_valid_mask(model.mask)
    assert steps[-1].edges == graph.n_edges(model.mask)
    assert evolver.converged  # no training between steps: the graph reaches a fixed point
    first = steps[0]
    assert first.edges == 45 - first.pruned + first.added
    assert len(first.prune_values) == 45  # NCIM on every present edge of the dense start


@pytest.mark.parametrize(
    "in_features, out_features, target",
    [(784, 10, 84_000), (64, 10, 4985), (784, 47, 90_000), (784, 10, 24_295), (64, 10, 1695)],
)
def test_fcnn_width_matches_parameters_within_one_percent(in_features, out_features, target):
    width = matching_width(in_features, out_features, target)
    model = FCNN(in_features, width, out_features)
    assert model.effective_params() == fcnn_params(in_features, width, out_features)
    assert abs(model.effective_params() - target) <= out_features + 1
    assert abs(model.effective_params() - target) / target < 0.01
    # The partial neuron's unread inputs get no gradient, so they never count.
    model(torch.randn(3, in_features)).sum().backward()
    assert not bool(model.hidden.weight.grad[~model.input_mask].any())


def test_validation_split_is_fixed_by_the_seed_and_disjoint():
    data = load_digits()
    a = validation_split(data.x_train, data.y_train, 0.1, seed=3)
    b = validation_split(data.x_train, data.y_train, 0.1, seed=3)
    c = validation_split(data.x_train, data.y_train, 0.1, seed=4)
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    assert a.x_train.shape[0] + a.x_val.shape[0] == data.x_train.shape[0]
    assert abs(a.x_val.shape[0] - 0.1 * data.x_train.shape[0]) < 10


def test_run_pair_selects_on_validation_and_matches_parameters():
    data = load_digits()
    config = TrainConfig(n_neurons=20, epochs=4, epsilon=0.3, seed=1)
    freeevolve, fcnn = run_pair(data, config)
    for result in (freeevolve, fcnn):
        best = max(result.epochs, key=lambda r: (r.val_accuracy, -r.epoch))
        assert result.best_epoch == best.epoch
        assert result.test_accuracy == best.test_accuracy
        assert result.val_accuracy == best.val_accuracy
    assert abs(fcnn.params - freeevolve.params) / freeevolve.params < 0.01
    assert freeevolve.params == freeevolve.model.effective_params()
    assert len(freeevolve.rounds) >= 1


def test_training_uses_fused_adam_where_torch_has_it():
    optimizer = adam([{"params": [torch.nn.Parameter(torch.zeros(3))]}], 0.01)
    # torch 2.4 and later have a fused CPU Adam; older ones fall back to the default.
    assert optimizer.defaults["fused"] or torch.__version__ < "2.4"


def test_cosine_schedule_decays_from_the_step_size_towards_zero():
    config = TrainConfig(epochs=10, learning_rate=0.01)
    rates = [learning_rate(config, epoch) for epoch in range(1, 11)]
    assert rates[0] == pytest.approx(0.01)
    assert rates[5] == pytest.approx(0.005)  # half way: the cosine's midpoint
    assert all(a > b > 0 for a, b in zip(rates[:-1], rates[1:], strict=True))
    constant = TrainConfig(epochs=10, learning_rate=0.01, schedule="constant")
    assert {learning_rate(constant, epoch) for epoch in range(1, 11)} == {0.01}
    with pytest.raises(ConfigError, match="--schedule"):
        TrainConfig(schedule="linear").validate()


def test_the_step_size_follows_the_schedule_during_training():
    data = load_digits()
    config = TrainConfig(n_neurons=8, epochs=3, learning_rate=0.01, seed=0)
    rates = []

    def checkpoint(state):  # called after every epoch with the optimiser's state
        rates.append([group["lr"] for group in state.optimizer["param_groups"]])

    model = FreeNet(data.n_features, 8, data.n_classes, generator=torch.Generator().manual_seed(0))
    split = validation_split(data.x_train, data.y_train, 0.1, 0)
    fit(
        "freenet",
        model,
        split,
        (data.x_test, data.y_test),
        config,
        torch.Generator(),
        checkpoint=checkpoint,
    )
    expected = [learning_rate(config, epoch) for epoch in (1, 2, 3)]
    assert [set(epoch_rates) for epoch_rates in rates] == [{rate} for rate in expected]
