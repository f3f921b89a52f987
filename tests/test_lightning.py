"""FreeEvolveCallback: FreeEvolve under a Lightning Trainer, checked against the Evolver.

Tiny CPU Trainers on the first digits: no GPU, no network, no progress bar.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from freenets import Evolver, FreeNet, graph  # noqa: E402
from freenets.lightning import FreeEvolveCallback  # noqa: E402
from freenets.rules.base import TopologyChange  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPSILON = 0.3  # on these digits: edges pruned in two rounds, then the graph stays


@pytest.fixture(autouse=True)
def quiet_lightning():
    """Lightning's advice on workers and loggers is noise for these tiny runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        yield


@pytest.fixture(scope="module")
def digits():
    from freenets.data import load_digits

    data = load_digits()
    return data.x_train[:480], data.y_train[:480]


class Classifier(pl.LightningModule):
    """A LightningModule around FreeNets, trained with Adam on the cross-entropy."""

    def __init__(self, *nets: nn.Module, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(net(x) for net in self.nets)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        if self.weight_decay:
            return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=self.weight_decay)
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def new_net(seed: int = 0, n_neurons: int = 16) -> FreeNet:
    return FreeNet(64, n_neurons, 10, generator=torch.Generator().manual_seed(seed))


def loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=64)  # in order: runs can be compared


def trainer(max_epochs: int, callbacks: list, **kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, **{**options, **kwargs})


class MaskRecorder(pl.Callback):
    """The graph after each epoch's FreeEvolve round (it runs after the callbacks before it)."""

    def __init__(self) -> None:
        self.masks: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.masks.append(pl_module.nets[0].mask.clone())


def evolver_masks(x, y, epochs: int, every: int, patience: int) -> tuple[list, FreeNet, Evolver]:
    """The same model and data in a plain Adam loop with the Evolver: the graph after each epoch."""
    net = new_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    evolver = Evolver(net, epsilon=EPSILON, optimizer=optimizer, patience=patience)
    masks = []
    for epoch in range(epochs):
        for xb, yb in loader(x, y):
            optimizer.zero_grad()
            functional.cross_entropy(net(xb), yb).backward()
            optimizer.step()
        # A round after every epoch but the last, as the training loop's fair order has it.
        if (epoch + 1) % every == 0 and epoch + 1 < epochs and not evolver.converged:
            evolver.step(x)
        masks.append(net.mask.clone())
    return masks, net, evolver


@pytest.mark.parametrize("every", [1, 2])
def test_the_graph_changes_as_the_evolvers_does(digits, every):
    x, y = digits
    epochs = 8
    expected, plain_net, evolver = evolver_masks(x, y, epochs, every, patience=2)
    callback = FreeEvolveCallback(x, epsilon=EPSILON, every_n_epochs=every, patience=2)
    recorder = MaskRecorder()
    module = Classifier(new_net())
    trainer(epochs, [callback, recorder]).fit(module, loader(x, y))
    assert len(recorder.masks) == epochs
    for epoch, (got, want) in enumerate(zip(recorder.masks, expected, strict=True)):
        assert torch.equal(got, want), f"the graphs differ after epoch {epoch}"
    before = [graph.dense_mask(16)] + expected[:-1]
    changes = sum(not torch.equal(a, b) for a, b in zip(before, expected, strict=True))
    assert changes == (2 if every == 1 else 1), "the graph should change in two rounds"
    assert evolver.converged
    torch.testing.assert_close(module.nets[0].weight, plain_net.weight, rtol=0, atol=0)
    net_name = next(iter(callback.evolvers))
    assert net_name == "nets.0"
    rounds = [r for r in callback.history if r.module == net_name]
    # Each record names the epoch it ended, from 1 as the training loop counts.
    assert [r.epoch for r in rounds] == [e for e in range(1, epochs) if e % every == 0]
    assert callback.evolvers[net_name].unchanged_steps == evolver.unchanged_steps
    assert callback.converged == evolver.converged


class StillnessCheck(pl.Callback):
    """Edges absent during an epoch keep their weights through it; changed edges lose Adam state."""

    def __init__(self) -> None:
        self.pruned = 0
        self.epochs = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        net = pl_module.nets[0]
        self.mask, self.weight = net.mask.clone(), net.weight.detach().clone()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Listed after FreeEvolveCallback: the epoch's round has run. With readd="restore" the
        # round moves no weight either, so every edge absent all epoch kept its weight exactly.
        net = pl_module.nets[0]
        assert torch.equal(net.weight.detach()[~self.mask], self.weight[~self.mask])
        changed = self.mask ^ net.mask
        self.pruned += int((self.mask & ~net.mask).sum())
        state = trainer.optimizers[0].state[net.weight]
        assert (state["exp_avg"][changed] == 0).all()
        assert (state["exp_avg_sq"][changed] == 0).all()
        self.epochs += 1


def test_pruned_weights_do_not_move(digits):
    x, y = digits
    check = StillnessCheck()
    callback = FreeEvolveCallback(x, epsilon=EPSILON, patience=3)
    trainer(6, [callback, check]).fit(Classifier(new_net()), loader(x, y))
    assert check.epochs == 6
    assert check.pruned > 0, "no edge was pruned, so nothing was checked"


def run_with_checkpoints(x, y, directory, epochs, *, validate, ckpt_path=None, seed=0):
    """A run saving a checkpoint per epoch, ``epoch=N.ckpt``, at epoch end or validation end."""
    # At validation end the checkpoint is written before the epoch's FreeEvolve round.
    saver = pl.callbacks.ModelCheckpoint(
        dirpath=directory, filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=not validate
    )
    extra = {"val_dataloaders": loader(x[:128], y[:128])} if validate else {}
    callback = FreeEvolveCallback(x, epsilon=EPSILON, patience=3)
    module = Classifier(new_net(seed))
    run = trainer(epochs, [callback, saver], enable_checkpointing=True)
    run.fit(module, loader(x, y), ckpt_path=ckpt_path, **extra)
    return module, callback


def timeless(history):
    """The records without their wall-clock seconds, which differ from run to run."""
    return [dataclasses.replace(record, seconds=0.0) for record in history]


@pytest.mark.parametrize("validate", [False, True], ids=["on-epoch-end", "on-validation-end"])
def test_a_resumed_run_goes_on_as_an_uninterrupted_one(digits, tmp_path, validate):
    x, y = digits
    whole, whole_callback = run_with_checkpoints(x, y, tmp_path, 7, validate=validate)
    checkpoint = tmp_path / "epoch=3.ckpt"
    saved = torch.load(checkpoint, weights_only=False)["callbacks"]["FreeEvolveCallback"]
    # Saved at validation end, the checkpoint predates the fourth round, which the resumed run
    # must then take; saved at epoch end, it holds all four.
    assert len(saved["history"]) == (3 if validate else 4)
    count = saved["rules"]["nets.0"]["unchanged_rounds"]
    assert count == (1 if validate else 2), "a count of 0 at the checkpoint would check nothing"
    # A differently initialised model: graph, weights and counts must all come from the checkpoint.
    resumed, resumed_callback = run_with_checkpoints(
        x, y, tmp_path / "resumed", 7, validate=validate, ckpt_path=checkpoint, seed=5
    )
    assert torch.equal(resumed.nets[0].mask, whole.nets[0].mask)
    torch.testing.assert_close(resumed.nets[0].weight, whole.nets[0].weight, rtol=0, atol=0)
    assert timeless(resumed_callback.history) == timeless(whole_callback.history)
    assert len(whole_callback.history) == 6  # a round after each epoch but the seventh
    assert resumed_callback.evolvers["nets.0"].unchanged_steps == 3  # converged: patience reached
    assert whole_callback.evolvers["nets.0"].unchanged_steps == 3


def test_the_rounds_are_logged(digits, tmp_path):
    x, y = digits
    logger = pl.loggers.CSVLogger(tmp_path, name="run", version=0)
    callback = FreeEvolveCallback(x, epsilon=EPSILON)
    run = trainer(3, [callback], logger=logger)
    net = new_net()
    run.fit(Classifier(net), loader(x, y))
    last = callback.history[-1]
    assert run.callback_metrics["edges"].item() == net.n_edges == last.edges
    assert run.callback_metrics["added"].item() == last.added
    assert run.callback_metrics["pruned"].item() == last.pruned
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("edges")]
    assert [int(row["epoch"]) for row in rows] == [0, 1]  # none after the last epoch
    assert [float(row["edges"]) for row in rows] == [float(r.edges) for r in callback.history]
    assert [float(row["pruned"]) for row in rows] == [float(r.pruned) for r in callback.history]


def test_several_freenets_are_evolved_and_logged_by_name(digits):
    x, y = digits
    callback = FreeEvolveCallback(x, epsilon=EPSILON)
    first, second = new_net(0, 12), new_net(1, 8)
    run = trainer(3, [callback])
    run.fit(Classifier(first, second), loader(x[:128], y[:128]))
    assert list(callback.evolvers) == ["nets.0", "nets.1"]
    assert run.callback_metrics["nets.0/edges"].item() == first.n_edges
    assert run.callback_metrics["nets.1/edges"].item() == second.n_edges
    assert "edges" not in run.callback_metrics
    assert [(r.epoch, r.module) for r in callback.history] == [
        (1, "nets.0"),
        (1, "nets.1"),
        (2, "nets.0"),
        (2, "nets.1"),
    ]
    assert graph.is_valid_mask(first.mask) and graph.is_valid_mask(second.mask)


def test_a_data_loader_gives_the_same_rounds_as_a_tensor(digits):
    x, y = digits
    histories = []
    for data in (x, loader(x, y)):
        callback = FreeEvolveCallback(data, epsilon=EPSILON)
        trainer(2, [callback]).fit(Classifier(new_net()), loader(x, y))
        histories.append(callback.history)
    assert timeless(histories[0]) == timeless(histories[1])
    assert isinstance(histories[0][0], TopologyChange) and histories[0][0].epoch == 1


class Plain(pl.LightningModule):
    """A module without a FreeNet."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_a_module_without_a_freenet_is_refused(digits):
    x, y = digits
    with pytest.raises(ValueError, match="Plain holds no freenets.FreeNet"):
        trainer(1, [FreeEvolveCallback(x)]).fit(Plain(), loader(x[:64], y[:64]))


def test_weight_decay_on_the_graph_weights_is_refused(digits):
    x, y = digits
    module = Classifier(new_net(), weight_decay=0.01)
    with pytest.raises(ValueError, match="weight_decay to model.weight"):
        trainer(1, [FreeEvolveCallback(x)]).fit(module, loader(x[:64], y[:64]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epsilon": 0.0}, r"epsilon must lie in \(0, 1\), got 0.0"),
        ({"epsilon": 1.5}, r"epsilon must lie in \(0, 1\), got 1.5"),
        ({"patience": 0}, "patience must be at least 1"),
        ({"readd": "keep"}, "readd must be 'restore' or 'zero'"),
        ({"every_n_epochs": 0}, "every_n_epochs must be at least 1"),
        ({"every_n_epochs": 1.5}, "every_n_epochs must be an integer"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_are_clear_value_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        FreeEvolveCallback(torch.zeros(4, 64), **arguments)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.zeros(0, 64), "at least one sample"),
        (iter([torch.zeros(4, 64)]), "iterator, which one round would use up"),
        (3, "a tensor of inputs or an iterable of batches, got int"),
    ],
)
def test_bad_data_is_a_clear_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        FreeEvolveCallback(data)


def test_a_checkpoint_for_other_freenets_is_refused(digits):
    x, y = digits
    callback = FreeEvolveCallback(x, epsilon=EPSILON)
    trainer(1, [callback]).fit(Classifier(new_net()), loader(x[:64], y[:64]))
    state = callback.state_dict()
    assert state["rules"] == {
        "nets.0": {"unchanged_rounds": callback.evolvers["nets.0"].unchanged_steps}
    }
    state["rules"] = {"encoder": state["rules"]["nets.0"]}
    with pytest.raises(ValueError, match=r"for the FreeNets \['encoder'\].*holds \['nets.0'\]"):
        callback.load_state_dict(state)
    with pytest.raises(ValueError, match="no FreeEvolveCallback state"):
        callback.load_state_dict({"unchanged_rounds": 0})


def load_example():
    path = Path(__file__).resolve().parents[1] / "examples" / "lightning_digits.py"
    spec = importlib.util.spec_from_file_location("lightning_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lightning_example_trains_on_digits(capsys):
    result = load_example().main(["--epochs", "4", "--neurons", "16"])
    printed = capsys.readouterr().out
    assert printed.count("epoch ") == 4
    assert result["test_accuracy"] > 0.8
    assert result["edges"] == result["model"].n_edges < 120  # FreeEvolve pruned some edges
    assert [r.epoch for r in result["history"]] == [1, 2, 3]  # none after the last epoch


def test_a_state_saved_before_topology_callbacks_existed_loads(digits):
    """FreeEvolveCallback's earlier state (no generators, epochs from 0) reads as today's."""
    x, _ = digits
    callback = FreeEvolveCallback(x, epsilon=EPSILON)
    earlier = {
        "rules": {"net": {"unchanged_rounds": 1}},
        "history": [{"epoch": 0, "module": "net", "edges": 100, "added": 0, "pruned": 20}],
    }
    callback.load_state_dict(earlier)
    assert callback.state_dict()["generators"] == {}
    assert callback.state_dict()["history"][0]["epoch"] == 1
