"""Topology changes during training: pruned weights stay put, re-added ones come back."""

import pytest
import torch

from freenets import Evolver, FreeNet, graph
from freenets.baselines import FCNN, fcnn_params, matching_width
from freenets.data import load_digits, validation_split
from freenets.errors import ConfigError
from freenets.rules.base import TopologyRule
from freenets.training.callbacks import Checkpoint
from freenets.training.config import TrainConfig
from freenets.training.loop import fit
from freenets.training.optim import adam, learning_rate
from freenets.training.train import run_pair


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
    config = TrainConfig.of(n_neurons=20, epochs=4, epsilon=0.3, seed=1)
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
    config = TrainConfig.of(epochs=10, learning_rate=0.01)
    rates = [learning_rate(config, epoch) for epoch in range(1, 11)]
    assert rates[0] == pytest.approx(0.01)
    assert rates[5] == pytest.approx(0.005)  # half way: the cosine's midpoint
    assert all(a > b > 0 for a, b in zip(rates[:-1], rates[1:], strict=True))
    constant = TrainConfig.of(epochs=10, learning_rate=0.01, schedule="constant")
    assert {learning_rate(constant, epoch) for epoch in range(1, 11)} == {0.01}
    with pytest.raises(ConfigError, match="--schedule"):
        TrainConfig.of(schedule="linear").validate()


def test_the_step_size_follows_the_schedule_during_training():
    data = load_digits()
    config = TrainConfig.of(n_neurons=8, epochs=3, learning_rate=0.01, seed=0)
    rates = []

    def checkpoint(state):  # called after every epoch with the optimiser's state
        rates.append([group["lr"] for group in state.optimizer["param_groups"]])

    model = FreeNet(data.n_features, 8, data.n_classes, generator=torch.Generator().manual_seed(0))
    split = validation_split(data.x_train, data.y_train, 0.1, 0)
    fit(
        "freenet",
        model,
        (split.x_train, split.y_train),
        config,
        torch.Generator(),
        validation=(split.x_val, split.y_val),
        callbacks=[Checkpoint(checkpoint)],
    )
    expected = [learning_rate(config, epoch) for epoch in (1, 2, 3)]
    assert [set(epoch_rates) for epoch_rates in rates] == [{rate} for rate in expected]


# ---------------------------------------------------------------------- the loop's hooks


class RecordingRule(TopologyRule):
    """A rule that writes down every call and drops one random edge per round for 3 rounds."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.rounds_done = 0

    def initial_mask(self, model, generator):
        self.calls.append(("initial",))
        return graph.layered_mask([4, 4])  # a sparse start

    def after_batch(self, model, info):
        self.calls.append(("batch", info.step, info.total_steps))
        return None

    def after_round(self, model, info):
        self.calls.append(("round", info.round, info.epoch))
        self.rounds_done += 1
        present = model.mask.nonzero()
        drop = present[torch.randint(len(present), (1,), generator=info.generator)][0]
        proposal = model.mask.clone()
        proposal[drop[0], drop[1]] = False
        return proposal

    @property
    def converged(self):
        return self.rounds_done >= 3

    def state_dict(self):
        return {"rounds_done": self.rounds_done}

    def load_state_dict(self, state):
        self.rounds_done = state["rounds_done"]


def toy_fit(rule, epochs=5, **options):
    data = load_digits()
    split = validation_split(data.x_train[:300], data.y_train[:300], 0.2, 0)
    model = FreeNet(64, 8, 10, generator=torch.Generator().manual_seed(0))
    config = TrainConfig.of(n_neurons=8, epochs=epochs, batch_size=100, epochs_per_round=2, seed=0)
    result = fit(
        "toy",
        model,
        (split.x_train, split.y_train),
        config,
        torch.Generator().manual_seed(1),
        validation=(split.x_val, split.y_val),
        rule=rule,
        **options,
    )
    return result, split


def test_fit_asks_the_rule_at_its_three_points_and_applies_its_proposals():
    rule = RecordingRule()
    result, split = toy_fit(rule, epochs=8)
    batches = -(-split.x_train.shape[0] // 100)  # 3 optimiser steps an epoch
    assert rule.calls[0] == ("initial",)
    batch_calls = [call for call in rule.calls if call[0] == "batch"]
    assert batch_calls == [("batch", step, 8 * batches) for step in range(1, 8 * batches + 1)]
    # A round every 2 epochs until the rule has converged (3 rounds), then none.
    assert [call for call in rule.calls if call[0] == "round"] == [
        ("round", 0, 2),
        ("round", 1, 4),
        ("round", 2, 6),
    ]
    assert [(r.round, r.epoch, r.added, r.pruned) for r in result.rounds] == [
        (1, 2, 0, 1),
        (2, 4, 0, 1),
        (3, 6, 0, 1),
    ]
    assert [r.edges for r in result.rounds] == [15, 14, 13]
    assert [graph.n_edges(mask) for mask in result.masks] == [16, 15, 14, 13]
    assert result.rounds[0].prune_values == []  # this rule keeps no values
    assert result.extra == {"converged": True}
    assert result.model.n_edges == result.epochs[result.best_epoch - 1].edges


def test_fit_resumes_a_rule_with_its_state_and_generator_bit_identically():
    from freenets.errors import Interrupted
    from freenets.training.callbacks import StopWhenAsked
    from freenets.training.state import FitState

    whole, split = toy_fit(RecordingRule(), epochs=8)
    saved = []
    asked = iter(range(1000))
    with pytest.raises(Interrupted):
        toy_fit(
            RecordingRule(),
            epochs=8,
            callbacks=[Checkpoint(saved.append), StopWhenAsked(lambda: next(asked) == 9)],
        )
    state = saved[-1]
    assert (state.epoch, state.position) == (3, 100) and state.rule == {"rounds_done": 1}
    again = FitState.from_dict(state.to_dict(), epochs=8, n_train=split.x_train.shape[0])
    resumed, _ = toy_fit(RecordingRule(), epochs=8, state=again)
    assert [r.edges for r in resumed.rounds] == [r.edges for r in whole.rounds]
    for a, b in zip(resumed.masks, whole.masks, strict=True):
        assert torch.equal(a, b)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_warm_start_does_not_ask_for_an_initial_graph_again():
    rule = RecordingRule()
    rule.rounds_done = 3  # converged: no rounds either
    result, _ = toy_fit(rule, epochs=1, warm_start=True)
    assert ("initial",) not in rule.calls
    assert result.model.n_edges == 28 and len(result.masks) == 1
    assert torch.equal(result.masks[0], graph.dense_mask(8))


def test_early_stopping_ends_training_and_returns_the_best_epoch():
    from freenets.training.callbacks import EarlyStopping

    result, _ = toy_fit(None, epochs=40, callbacks=[EarlyStopping(2)])
    scores = [record.val_accuracy for record in result.epochs]
    assert len(scores) < 40
    assert result.best_epoch == 1 + scores.index(max(scores))
    # scikit-learn's count: stopped once more than two epochs in a row did not improve.
    assert len(scores) - result.best_epoch == 3
    assert result.val_accuracy == max(scores)


def test_fit_without_validation_keeps_the_last_epoch_and_fits_a_regression():
    from freenets.training.tasks import REGRESSION, r2_score

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(400, 3, generator=generator)
    y = torch.stack([x.sum(dim=1), x[:, 0] - x[:, 1]], dim=1)
    model = FreeNet(3, 12, 2, generator=generator)
    config = TrainConfig.of(n_neurons=12, epochs=40, batch_size=32, learning_rate=0.01)
    result = fit("regression", model, (x, y), config, generator, task=REGRESSION)
    assert result.best_epoch == 40 and result.val_accuracy is None
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss / 10
    assert r2_score(result.model, x, y) > 0.9


def test_a_saved_optimizer_setting_of_another_type_is_refused():
    """0 == False, yet torch's fused Adam fails mid-step on amsgrad=0: the loader checks types."""
    from freenets.training.optim import load_optimizer

    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([weight], lr=0.01)
    saved = optimizer.state_dict()
    saved["param_groups"][0]["amsgrad"] = 0
    with pytest.raises(ValueError, match="settings differ"):
        load_optimizer(optimizer, saved, 0)
