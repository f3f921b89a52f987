"""Checkpoints and --resume: a run stopped anywhere and resumed ends bit-identical to one never
stopped; damaged or mismatched checkpoints end in one CheckpointError."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
import torch
from toy_runs import (
    TOY_CONFIG,
    StopAfter,
    assert_same_results,
    run_results,
    toy_dataset,
)

from freenets.errors import CheckpointError, ConfigError, Interrupted, TrainingFailed
from freenets.experiments import runs
from freenets.training.callbacks import StopWhenAsked
from freenets.training.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    digest,
    load_checkpoint,
    save_checkpoint,
)
from freenets.training.config import TrainConfig
from freenets.training.interrupt import StopOnInterrupt
from freenets.training.loop import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The toy run, never interrupted."""
    out = tmp_path_factory.mktemp("baseline")
    runs.train_run(TOY_CONFIG, toy_dataset(), out, show_progress=False)
    return run_results(out)


def interrupt(out, calls: int) -> dict:
    """Run the toy config in ``out`` until ``should_stop`` says stop at its ``calls``-th call."""
    with pytest.raises(Interrupted):
        runs.train_run(
            TOY_CONFIG, toy_dataset(), out, show_progress=False, should_stop=StopAfter(calls)
        )
    return load_checkpoint(out / CHECKPOINT_NAME)


# ---------------------------------------------------------------------- the file format


def test_digest_sees_every_change():
    body = {"a": torch.arange(4.0), "b": [1, 2.5, None, "x"], "c": {0: (True, 1)}}
    same = {"a": torch.arange(4.0), "b": [1, 2.5, None, "x"], "c": {0: (True, 1)}}
    assert digest(body) == digest(same)
    changed = [
        {**body, "a": torch.tensor([0.0, 1.0, 2.0, float.fromhex("0x1.0000000000001p+1")])},
        {**body, "a": torch.arange(4.0, dtype=torch.float64)},
        {**body, "b": [1, 2.5, None, "y"]},
        {**body, "b": (1, 2.5, None, "x")},
        {**body, "b": [1, 2.5000000000000004, None, "x"]},
        {**body, "c": {0: (1, 1)}},
        {**body, "c": {"0": (True, 1)}},
    ]
    assert len({digest(value) for value in changed} | {digest(body)}) == len(changed) + 1
    with pytest.raises(TypeError):
        digest({"a": object()})


def test_checkpoint_is_plain_torch_and_round_trips(tmp_path):
    body = {"x": torch.randn(3, 3), "phase": "fcnn", "n": [1, 2.0, None]}
    save_checkpoint(tmp_path / "c.pt", body)
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["format"] == FORMAT == 2 and raw["sha256"] == digest(body)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["x"], body["x"]) and loaded["n"] == body["n"]


def test_damaged_checkpoints_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": torch.arange(1000.0)})
    data = path.read_bytes()
    # A bit flipped inside the tensor's bytes: torch.load alone accepts it; the checksum does not.
    flipped = bytearray(data)
    flipped[data.index(struct.pack("<f", 500.0))] ^= 0x01
    assert torch.load(io.BytesIO(bytes(flipped)), weights_only=True)["body"]["x"][500] != 500.0
    cases = {
        "flipped": bytes(flipped),
        "truncated": data[: len(data) // 3],
        "empty": b"",
        "text": b"not a checkpoint\n",
    }
    for content in cases.values():
        path.write_bytes(content)
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a freenets checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------------- bit-identical resume


# (calls to should_stop before it says stop, where the checkpoint then is). The toy split has 216
# training samples, 7 batches of 32: should_stop is asked after batches 1-6 and after each epoch
# but the last; FreeEvolve takes 41 calls, then one more when it is done.
STOPS = [
    (3, "freeevolve", 0, 96),  # FreeEvolve, epoch 1, after 3 batches
    (7, "freeevolve", 1, 0),  # after FreeEvolve's first epoch and round
    (16, "freeevolve", 2, 64),  # the graph still changing: FreeEvolve not converged
    (42, "fcnn", None, None),  # FreeEvolve done, the FCNN not started
    (45, "fcnn", 0, 96),  # the FCNN, epoch 1, after 3 batches
    (56, "fcnn", 2, 0),  # after the FCNN's second epoch
]


@pytest.mark.parametrize(("calls", "phase", "epoch", "position"), STOPS)
def test_resume_is_bit_identical(tmp_path, baseline, calls, phase, epoch, position):
    body = interrupt(tmp_path, calls)
    assert body["phase"] == phase
    if epoch is None:
        assert body["fit"] is None
    else:
        assert (body["fit"]["epoch"], body["fit"]["position"]) == (epoch, position)
    if calls == 16:
        assert body["fit"]["rule"] == {"unchanged_rounds": 0} and len(body["fit"]["rounds"]) == 2
    assert not (tmp_path / "summary.json").exists()
    config = runs.read_config(tmp_path)
    assert config == TOY_CONFIG
    runs.train_run(config, toy_dataset(), tmp_path, show_progress=False, resume=True)
    assert_same_results(run_results(tmp_path), baseline)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_many_interruptions_in_one_run(tmp_path, baseline):
    interrupt(tmp_path, 5)
    stops = 1
    while True:
        try:
            runs.train_run(
                TOY_CONFIG,
                toy_dataset(),
                tmp_path,
                show_progress=False,
                resume=True,
                should_stop=StopAfter(9),
            )
            break
        except Interrupted:
            stops += 1
    assert stops > 5
    assert_same_results(run_results(tmp_path), baseline)


def test_a_run_resumed_after_freeevolve_saves_the_model_with_its_bias_bound(tmp_path):
    """The FreeEvolve model rebuilt from the checkpoint keeps the run's ``bias_bound``: the saved
    ``freeevolve.pt`` says 0.3 whether or not the run was stopped between its two phases."""
    config = TOY_CONFIG.replace(bias_bound=0.3)
    with pytest.raises(Interrupted):  # FreeEvolve done, the FCNN not started
        runs.train_run(
            config, toy_dataset(), tmp_path, show_progress=False, should_stop=StopAfter(42)
        )
    runs.train_run(config, toy_dataset(), tmp_path, show_progress=False, resume=True)
    assert runs.load_model(tmp_path / "freeevolve.pt").bias_bound == 0.3


def test_resume_before_any_checkpoint_starts_over(tmp_path, baseline):
    interrupt(tmp_path, 2)
    (tmp_path / CHECKPOINT_NAME).unlink()  # as if killed during the first epoch
    runs.train_run(TOY_CONFIG, toy_dataset(), tmp_path, show_progress=False, resume=True)
    assert_same_results(run_results(tmp_path), baseline)


def test_same_seed_same_run(tmp_path, baseline):
    runs.train_run(TOY_CONFIG, toy_dataset(), tmp_path, show_progress=False)
    assert_same_results(run_results(tmp_path), baseline)


# ---------------------------------------------------------------------- earlier formats

# A run directory written by earlier code (checkpoint format 1, FreeEvolve's count in
# ``unchanged_steps``): the toy run stopped in epoch 3. That code changed the graph before scoring
# each epoch, so the run cannot go on in today's order with the result it would have had.
FORMAT1_RUN = Path(__file__).parent / "data" / "run-format1"


def test_a_checkpoint_of_format_1_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FORMAT1_RUN, run)
    assert torch.load(run / CHECKPOINT_NAME, weights_only=True)["format"] == 1
    config = runs.read_config(run)
    with pytest.raises(CheckpointError, match="earlier freenets") as caught:
        runs.train_run(config, toy_dataset(), run, show_progress=False, resume=True)
    assert "\n" not in str(caught.value) and "without --resume" in str(caught.value)


def test_a_training_state_of_unknown_layout_is_refused_in_one_line(tmp_path):
    body = interrupt(tmp_path, 10)
    body["fit"] = {k: v for k, v in body["fit"].items() if k != "skipped_steps"}
    save_checkpoint(tmp_path / CHECKPOINT_NAME, body)
    with pytest.raises(CheckpointError, match="missing or unknown fields") as caught:
        runs.train_run(TOY_CONFIG, toy_dataset(), tmp_path, show_progress=False, resume=True)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------- refusals


def test_finished_run_is_not_resumed(tmp_path):
    config = TOY_CONFIG.replace(epochs=1)
    runs.train_run(config, toy_dataset(), tmp_path, show_progress=False)
    with pytest.raises(CheckpointError, match="has finished"):
        runs.train_run(config, toy_dataset(), tmp_path, show_progress=False, resume=True)


def test_mismatched_checkpoint_is_refused(tmp_path):
    interrupt(tmp_path, 10)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "epochs": 9}))
    config = runs.read_config(tmp_path)
    with pytest.raises(CheckpointError, match="'epochs' is 6 there and 9 in config.json"):
        runs.train_run(config, toy_dataset(), tmp_path, show_progress=False, resume=True)
    with pytest.raises(CheckpointError, match="sizes"):
        runs.train_run(TOY_CONFIG, toy_dataset(n_train=200), tmp_path, resume=True)


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    """A checkpoint with an intact checksum whose tensors do not fit the model."""
    body = interrupt(tmp_path, 10)
    body["fit"]["model"]["weight"] = torch.zeros(3, 3)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, body)
    with pytest.raises(CheckpointError, match="does not fit the freeevolve model"):
        runs.train_run(TOY_CONFIG, toy_dataset(), tmp_path, show_progress=False, resume=True)


def test_read_config_refuses_what_is_not_a_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        runs.read_config(tmp_path)
    for text in ["{", "[]", '{"n_neurons": "8"}', '{"colour": 1}', '{"epochs": 0}']:
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(CheckpointError):
            runs.read_config(tmp_path)


def test_config_from_dict():
    assert TrainConfig.from_dict(TOY_CONFIG.to_dict()) == TOY_CONFIG
    loaded = TrainConfig.from_dict({"learning_rate": 1, "data_dir": None})
    assert loaded.optim.learning_rate == 1.0 and isinstance(loaded.optim.learning_rate, float)
    for bad in [{"n_neurons": 2.0}, {"seed": True}, {"dataset": None}, {"lr": 1}, {"seed": 2**70}]:
        with pytest.raises(ConfigError):
            TrainConfig.from_dict(bad)


def test_config_is_split_by_concern_and_saved_flat_as_before():
    config = TrainConfig.of(dataset="iris", n_neurons=7, epochs=3, rule="set", density=0.5, seed=4)
    assert (config.data.dataset, config.model.n_neurons, config.optim.epochs) == ("iris", 7, 3)
    assert (config.topology.rule, config.topology.density, config.seed) == ("set", 0.5, 4)
    # config.json keeps one key per setting: every earlier run directory's, and sparse_grad
    # (which an earlier run reads as its default, False).
    assert set(config.to_dict()) == {
        *("dataset", "data_dir", "train_size", "target", "n_neurons", "epsilon", "epochs"),
        *("epochs_per_round", "patience", "batch_size", "learning_rate", "schedule"),
        *("weight_decay", "readd", "val_fraction", "bias_bound", "seed", "rule", "density"),
        *("edges", "zeta", "delta_t", "rule_stop", "device", "sparse_grad"),
    }
    changed = config.replace(epsilon=0.5, batch_size=16)
    assert changed.topology.epsilon == 0.5 and changed.optim.batch_size == 16
    assert changed.data == config.data and config.topology.epsilon == 0.25  # frozen parts
    with pytest.raises(ConfigError, match="unknown setting 'lr'"):
        TrainConfig.of(lr=0.1)
    with pytest.raises(ConfigError, match="--epochs must be at least 1"):
        config.replace(epochs=0).validate()


# ---------------------------------------------------------------------- failures and stops


def test_diverged_run_is_recorded_as_failed(tmp_path):
    config = TOY_CONFIG.replace(learning_rate=1e4)
    with pytest.raises(TrainingFailed) as caught:
        runs.train_run(config, toy_dataset(), tmp_path, show_progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == caught.value.summary
    assert summary["status"] == "failed" and "freeevolve" in summary["reason"]
    assert summary["freeevolve"]["status"] == "failed"
    assert summary["fcnn"]["status"] == "skipped"
    assert "accuracy" not in json.dumps(summary)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_fit_stops_without_a_checkpoint_hook():
    from freenets.baselines import FCNN
    from freenets.data import validation_split

    data = toy_dataset()
    split = validation_split(data.x_train, data.y_train, 0.1, 0)
    model = FCNN(6, 4, 3)
    with pytest.raises(Interrupted):
        fit(
            "fcnn",
            model,
            (split.x_train, split.y_train),
            TOY_CONFIG,
            torch.Generator().manual_seed(0),
            validation=(split.x_val, split.y_val),
            callbacks=[StopWhenAsked(StopAfter(1))],
        )


def test_stop_on_interrupt_catches_one_sigint_and_restores_the_handler():
    def previous(signum, frame):
        raise AssertionError("the previous handler ran")

    original = signal.signal(signal.SIGINT, previous)
    try:
        stop = StopOnInterrupt()
        with stop:
            assert not stop()
            os.kill(os.getpid(), signal.SIGINT)
            assert stop()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is previous
    finally:
        signal.signal(signal.SIGINT, original)


# ---------------------------------------------------------------------- any rule's run

RULE_RUNS = {
    "dense": {},
    "random": {"epsilon": 0.6},  # FreeEvolve's rounds both prune and add on this toy run
    "magnitude": {"epsilon": 0.6},
    "set": {"density": 0.5, "zeta": 0.4},
    # 7 batches an epoch, 42 steps: updates at 5, 10, ..., 30 before 75% of them (31.5).
    "rigl": {"edges": 12, "delta_t": 5, "rule_stop": 0.75},
}


@pytest.mark.parametrize("rule", sorted(RULE_RUNS))
def test_a_run_of_any_rule_records_its_parameters_and_resumes_bit_identically(tmp_path, rule):
    config = TOY_CONFIG.replace(rule=rule, **RULE_RUNS[rule])
    whole = tmp_path / "whole"
    runs.train_run(config, toy_dataset(), whole, show_progress=False)
    saved = json.loads((whole / "config.json").read_text())
    assert saved["rule"] == rule and all(saved[k] == v for k, v in RULE_RUNS[rule].items())
    assert runs.read_config(whole) == config  # reproducible from config.json alone
    results = run_results(whole)
    assert set(results["history"]) == {rule, "fcnn"}
    # The FCNN is matched to the rule's FreeNet (within the width's granularity).
    gap = results["summary"]["fcnn"]["params"] - results["summary"][rule]["params"]
    assert results["summary"]["fcnn"]["param_gap"] == round(
        gap / results["summary"][rule]["params"], 6
    )
    if rule == "rigl":  # its updates are recorded, each with its step
        steps = [r["step"] for r in results["history"]["rigl"]["rounds"]]
        assert steps == [5, 10, 15, 20, 25, 30]
    if rule in ("random", "magnitude"):  # FreeEvolve's churn, round by round
        reference = runs.train_run(
            config.replace(rule="freeevolve"),
            toy_dataset(),
            tmp_path / "freeevolve",
            show_progress=False,
        )
        evolved = json.loads((tmp_path / "freeevolve" / "history.json").read_text())
        churn = [(r["pruned"], r["added"]) for r in evolved["freeevolve"]["rounds"]]
        assert reference["status"] == "ok" and len(churn) > 1
        rounds = results["history"][rule]["rounds"]
        assert [(r["pruned"], r["added"]) for r in rounds] == churn
    for calls in (9, 23, 40):  # in the FreeNet's first epochs, later, in the FCNN's
        part = tmp_path / f"stopped-{calls}"
        with pytest.raises(Interrupted):
            runs.train_run(
                config, toy_dataset(), part, show_progress=False, should_stop=StopAfter(calls)
            )
        runs.train_run(config, toy_dataset(), part, show_progress=False, resume=True)
        assert_same_results(run_results(part), results)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rule", "set"], "needs --density or --edges"),
        (["--rule", "rigl", "--density", "1.5"], "--density must lie in [0, 1]"),
        (["--rule", "set", "--density", "0.5", "--edges", "3"], "not allowed with argument"),
        (["--rule", "lottery"], "invalid choice: 'lottery'"),
    ],
)
def test_rule_options_errors_are_one_line(tmp_path, run_cli, one_error_line, argv, message):
    result = run_cli(["train", "--epochs", "1", "--out", str(tmp_path / "r"), *argv])
    assert result.code != 0 and one_error_line(result.err, message)
