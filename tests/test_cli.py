"""`freenets train` end to end on digits: the JSON contract, the run directory, and bad input."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest


def run_process(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``python -m freenets.cli args`` in a process of its own (the ``run_cli`` fixture runs it in
    this one): the module's entry point, and results that hold from one process to the next."""
    return subprocess.run(
        [sys.executable, "-m", "freenets.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_train_json_contract_and_run_directory(tmp_path, run_cli):
    out = tmp_path / "run"
    argv = ["train", "--neurons", "16", "--epochs", "3", "--batch-size", "32", "--seed", "2"]
    result = run_cli([*argv, "--out", str(out), "--json"])
    assert result.code == 0, result.err
    summary = json.loads(result.out.strip().splitlines()[-1])
    assert summary["dataset"] == "digits" and summary["neurons"] == 16
    for key in ("test_accuracy", "val_accuracy", "params", "edges", "seconds"):
        assert key in summary["freeevolve"]
    for key in ("test_accuracy", "val_accuracy", "params", "hidden", "seconds"):
        assert key in summary["fcnn"]
    for model in ("freeevolve", "fcnn"):
        assert 0.5 < summary[model]["test_accuracy"] <= 1.0
    assert abs(summary["fcnn"]["params"] - summary["freeevolve"]["params"]) <= 11
    for name in ("config.json", "history.json", "summary.json", "freeevolve.pt", "fcnn.pt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == summary
    config = json.loads((out / "config.json").read_text())
    assert config["n_neurons"] == 16 and config["seed"] == 2
    history = json.loads((out / "history.json").read_text())
    assert len(history["freeevolve"]["epochs"]) == 3
    assert history["freeevolve"]["rounds"][0]["edges"] <= 16 * 15 // 2
    assert "freeevolve" in result.out and "fcnn" in result.out  # the side-by-side table


def test_same_seed_same_results_in_two_processes(tmp_path):
    args = ["train", "--neurons", "8", "--epochs", "2", "--json", "--quiet"]
    first = run_process(*args, "--out", str(tmp_path / "a"))
    second = run_process(*args, "--out", str(tmp_path / "b"))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    a = json.loads(first.stdout.splitlines()[-1])
    b = json.loads(second.stdout.splitlines()[-1])
    for model in ("freeevolve", "fcnn"):
        a[model].pop("seconds")
        b[model].pop("seconds")
    assert a == b


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--neurons", "0"], "--neurons"),
        (["--neurons", "-3"], "--neurons"),
        (["--epsilon", "0"], "--epsilon"),
        (["--epsilon", "1"], "--epsilon"),
        (["--epsilon", "1.5"], "--epsilon"),
        (["--epsilon", "nan"], "--epsilon"),
        (["--epochs", "0"], "--epochs"),
        (["--dataset", "nope"], "unknown dataset"),
        (["--neurons", "ten"], "invalid int value"),
        (["--epsilon", "abc"], "invalid float value"),
        (["--epochs", "1.5"], "invalid int value"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_directory(tmp_path, run_cli, args, fragment):
    out = tmp_path / "run"
    result = run_cli(["train", "--out", str(out), *args])
    assert result.code == 2 and result.out == "" and result.err.startswith("freenets: error:")
    assert result.one_error_line(fragment), result.err
    assert not out.exists()


def test_bad_input_through_the_console_script_has_no_traceback(tmp_path, one_error_line):
    result = run_process("train", "--neurons", "0", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert one_error_line(result.stderr, "--neurons"), result.stderr
    assert result.stderr.startswith("freenets: error:")
    assert not (tmp_path / "run").exists()


def test_no_command_is_a_usage_error(run_cli):
    result = run_cli([])
    assert result.code == 2 and result.err.startswith("freenets: error:")
    assert result.one_error_line("command"), result.err


def _write_labels(tmp_path, name, labels):
    """A small dataset of 40 samples with the given labels, as .npz or .csv."""
    generator = np.random.default_rng(0)
    x = generator.random((len(labels), 4))
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, X=x, y=np.asarray(labels))
    else:
        rows = ["a,b,c,d,label"] + [
            ",".join(f"{v:.3f}" for v in row) + f",{label}"
            for row, label in zip(x, labels, strict=True)
        ]
        path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    "name, labels, fragment",
    [
        # A regression target that takes few values, each 10 times: once read as 4 classes.
        ("reals.npz", np.repeat([0.1, 0.35, 0.6, 0.85], 10), "continuous"),
        ("reals.csv", [f"{v:.2f}" for v in np.repeat([0.1, 0.35, 0.6, 0.85], 10)], "continuous"),
        ("one.npz", np.ones(40, dtype=np.int64), "one class"),
        ("one.csv", ["cat"] * 40, "one class"),
        ("counts.npz", np.arange(40) // 1, "50%"),  # an integer target, nearly all distinct
    ],
)
def test_labels_a_classifier_cannot_learn_are_one_line_exit_2(
    tmp_path, run_cli, name, labels, fragment
):
    path = _write_labels(tmp_path, name, labels)
    out = tmp_path / "run"
    result = run_cli(["train", "--dataset", str(path), "--epochs", "1", "--out", str(out)])
    assert result.code == 2, result.err
    assert result.one_error_line(fragment, str(path)), result.err
    assert result.err.startswith("freenets: error:")
    assert not out.exists()


def test_integer_valued_labels_written_as_reals_are_classes(tmp_path):
    """1.0, 2.0 and 3.0 are three classes, in numeric order, whether in .npz or .csv."""
    labels = [f"{v}.0" for v in np.arange(40) % 3 + 1]
    path = _write_labels(tmp_path, "classes.csv", labels)
    from freenets.data import load_dataset

    dataset = load_dataset(str(path))
    assert dataset.n_classes == 3
    assert sorted(set(dataset.y_train.tolist())) == [0, 1, 2]


def test_every_option_of_every_command_has_help_and_shows_its_default():
    from freenets.cli import _build_parser

    parser = _build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"freenets {name} {action.option_strings[0]} has no help"
            if action.default not in (None, False):
                shown = (
                    ",".join(map(str, action.default))
                    if isinstance(action.default, tuple)
                    else str(action.default)
                )
                flat = " ".join(text.split())
                assert f"(default: {shown})" in flat, f"freenets {name} {action.option_strings[0]}"
