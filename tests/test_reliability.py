"""Reliability of one training run: fuzzed inputs, injected faults, and no result lost.

Every test adds to TALLY, printed when the module ends and quoted in the README: inputs tried
(fuzzed command lines and checkpoints), faults injected (divergence, Ctrl-C, SIGKILL, crashes in
the middle of a write, full disks, unwritable directories) and results lost (runs that, once
resumed, did not end bit-identical to a run never disturbed, or left a damaged file). Each test
also asserts its own part, so a lost result fails the suite.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_runs import (
    TOY_CONFIG,
    StopAfter,
    assert_same_results,
    run_results,
    toy_dataset,
)

import freenets.atomic
from freenets import cli
from freenets.data import load_dataset
from freenets.errors import CheckpointError, Interrupted, TrainingFailed
from freenets.experiments import runs
from freenets.training.checkpoint import (
    CHECKPOINT_NAME,
    data_shape,
    digest,
    load_checkpoint,
    load_run_state,
    save_checkpoint,
)
from freenets.training.config import TrainConfig

TALLY = {"inputs tried": 0, "faults injected": 0, "results lost": 0}

# A small run of the real CLI on digits: about a second of training.
CLI_ARGS = ["--neurons", "8", "--epochs", "4", "--batch-size", "128", "--seed", "1", "--quiet"]
CLI_CONFIG = TrainConfig.of(n_neurons=8, epochs=4, batch_size=128, seed=1)
# Four samples per batch: the run trains for seconds, so that a signal sent once the first
# checkpoint exists lands in the middle of training, however fast the machine.
SLOW_ARGS = ["--neurons", "8", "--epochs", "4", "--batch-size", "4", "--seed", "1", "--quiet"]
SLOW_CONFIG = TrainConfig.of(n_neurons=8, epochs=4, batch_size=4, seed=1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# One thread (small shared machines); the subprocesses get OMP_NUM_THREADS=1.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True, scope="module")
def tally(print_tally):
    """The module's tally, printed once its tests have run."""
    yield
    print_tally("reliability", TALLY)


def lost_if(condition: bool) -> None:
    TALLY["results lost"] += int(bool(condition))


def check_same(run_dir: Path, baseline: dict) -> None:
    """Count a lost result unless ``run_dir`` is intact and equal to ``baseline``; then assert."""
    try:
        assert intact(run_dir)
        assert_same_results(run_results(run_dir), baseline)
    except AssertionError:
        lost_if(True)
        raise


@pytest.fixture(scope="module")
def cli_baseline(tmp_path_factory):
    """The CLI run, never disturbed."""
    out = tmp_path_factory.mktemp("cli-baseline")
    runs.train_run(CLI_CONFIG, load_dataset("digits"), out, show_progress=False)
    return run_results(out)


@pytest.fixture(scope="module")
def slow_baseline(tmp_path_factory):
    """The run of ``SLOW_ARGS``, never disturbed."""
    out = tmp_path_factory.mktemp("slow-baseline")
    runs.train_run(SLOW_CONFIG, load_dataset("digits"), out, show_progress=False)
    return run_results(out)


@pytest.fixture(scope="module")
def toy_baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-baseline")
    runs.train_run(TOY_CONFIG, toy_dataset(), out, show_progress=False)
    return run_results(out)


def _default_signals() -> None:
    # A shell that starts a job in the background (`cmd &`, nohup) sets SIGINT to "ignore", and
    # children inherit that; `freenets train` rightly leaves an ignored SIGINT ignored. The
    # process under test gets the default disposition, as in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args: list[str], **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "freenets.cli", *args]
    return subprocess.Popen(
        command,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_signals,
        **popen,
    )


def intact(run_dir: Path) -> bool:
    """Whether every result file in ``run_dir`` reads back (temporary files left by a kill aside)."""
    from xml.etree import ElementTree

    from PIL import Image

    for path in run_dir.rglob("*"):
        if path.is_dir() or (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.name == CHECKPOINT_NAME:
                load_checkpoint(path)
            elif path.suffix == ".pt":
                torch.load(path, weights_only=True)
            elif path.suffix == ".graphml":
                ElementTree.parse(path)
            elif path.suffix in (".png", ".gif"):
                with Image.open(path) as image:
                    image.verify()
            elif path.suffix in (".dot", ".csv"):
                if not path.read_text().strip():
                    return False
            else:
                return False  # a file no run writes
        except Exception:
            return False
    return True


# ---------------------------------------------------------------------- 1. fuzzed command lines

INTS = st.one_of(
    st.integers(-3, 70).map(str),
    st.integers(-(2**80), 2**80).map(str),
    st.sampled_from(["", "1.5", "1e3", "0x1f", "nan", " 4", "+3", "\u0663", "9" * 5000]),
    st.text(max_size=4),
)
FLOATS = st.one_of(
    st.floats().map(repr),
    st.floats(0, 1).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", ".5", "1_0", "0.25"]),
    st.text(max_size=4),
)
PATHS = st.one_of(
    st.sampled_from(["", "x", "runs/a b", "a\x00b", "-", "\udcff", "/proc/1/nope", "."]),
    st.text(max_size=6),
)
VALUES = {
    "--dataset": st.one_of(st.sampled_from(["digits", "mnist", "DIGITS", ""]), st.text(max_size=6)),
    "--data-dir": PATHS,
    "--neurons": INTS,
    "--epsilon": FLOATS,
    "--epochs": INTS,
    "--epochs-per-round": INTS,
    "--patience": INTS,
    "--batch-size": INTS,
    "--lr": FLOATS,
    "--readd": st.sampled_from(["restore", "zero", "none", ""]),
    "--seed": INTS,
    "--out": PATHS,
    "--resume": PATHS,
}
FLAGS = ["--json", "--quiet", "-h", "--help", "--version", "--", "-x", "--nope", "--epo", "--neu"]


@st.composite
def command_lines(draw) -> list[str]:
    tokens: list[str] = [] if draw(st.booleans()) and draw(st.booleans()) else ["train"]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["option", "option=", "flag", "junk"]))
        if kind.startswith("option"):
            option = draw(st.sampled_from(sorted(VALUES)))
            value = draw(VALUES[option])
            tokens += [f"{option}={value}"] if kind == "option=" else [option, value]
        elif kind == "flag":
            tokens.append(draw(st.sampled_from(FLAGS)))
        else:
            tokens.append(draw(st.text(max_size=5)))
    return tokens


FAKE_SUMMARY = {
    "dataset": "digits",
    "neurons": 8,
    "status": "ok",
    "freeevolve": {
        "test_accuracy": 0.5,
        "val_accuracy": 0.5,
        "params": 9,
        "edges": 3,
        "seconds": 1,
    },
    "fcnn": {"test_accuracy": 0.5, "val_accuracy": 0.5, "params": 9, "hidden": 2, "seconds": 1},
}


def fuzz(examples: int):
    """Hypothesis settings of a fuzz test: fixed seed, no deadline (runs vary on shared machines)."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@fuzz(300)
@given(argv=command_lines())
def test_fuzzed_command_lines_end_in_one_documented_line(
    argv, tmp_path, monkeypatch, run_cli, one_error_line
):
    check_command_line(argv, tmp_path, monkeypatch, run_cli, one_error_line)


@pytest.mark.slow
@fuzz(5000)
@given(argv=command_lines())
def test_many_fuzzed_command_lines(argv, tmp_path, monkeypatch, run_cli, one_error_line):
    check_command_line(argv, tmp_path, monkeypatch, run_cli, one_error_line)


def check_command_line(argv, tmp_path, monkeypatch, run_cli, one_error_line):
    """Parsing and checking only: training is replaced by a fake that checks the config."""
    TALLY["inputs tried"] += 1
    monkeypatch.chdir(tmp_path)
    trained: list[TrainConfig] = []

    def fake_train_run(config, dataset, out, **options):
        config.validate()
        trained.append(config)
        return FAKE_SUMMARY

    with (
        mock.patch.object(runs, "train_run", fake_train_run),
        mock.patch.object(
            cli, "load_dataset", lambda name, data_dir=None, **options: toy_dataset()
        ),
    ):
        code, stdout, stderr = run_cli(argv)
    if code == 0:
        asked_for_help = any(t in ("-h", "--help", "--version") for t in argv)
        assert trained or asked_for_help
        if trained and any(t == "--json" for t in argv):
            assert json.loads(stdout.strip().splitlines()[-1]) == FAKE_SUMMARY
    else:
        assert code in (1, 2), (argv, code)
        assert one_error_line(stderr), (argv, stderr)


def test_resume_option_errors(tmp_path, monkeypatch, run_cli, one_error_line):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    cases = [
        (["train", "--resume", str(run), "--epochs", "3"], 2, "drop --epochs"),
        (["train", "--resume", str(run), "--neu=3", "--json"], 2, "drop --neu"),
        (["train", "--resume", str(tmp_path / "none")], 1, "no config.json"),
        (["train", "--resume", str(run)], 1, "no config.json"),
    ]
    for config_text in ["{", "[1]", '{"epochs": "3"}', '{"epochs": -1}', '{"colour": 1}']:
        bad = tmp_path / f"bad{len(cases)}"
        bad.mkdir()
        (bad / "config.json").write_text(config_text)
        cases.append((["train", "--resume", str(bad)], 1, "config.json"))
    for argv, expected, fragment in cases:
        TALLY["inputs tried"] += 1
        code, _, stderr = run_cli(argv)
        assert code == expected and one_error_line(stderr, fragment), (argv, stderr)


# ---------------------------------------------------------------------- 1. fuzzed checkpoints


@pytest.fixture(scope="module")
def saved_checkpoints(tmp_path_factory):
    """Checkpoints of a short toy run, one in each phase: (run dir, body)."""
    config = TOY_CONFIG.replace(epochs=2)
    found = {}
    for phase, calls in (("freeevolve", 10), ("fcnn", 17)):
        out = tmp_path_factory.mktemp(f"fuzz-{phase}")
        with pytest.raises(Interrupted):
            runs.train_run(
                config, toy_dataset(), out, show_progress=False, should_stop=StopAfter(calls)
            )
        body = load_checkpoint(out / CHECKPOINT_NAME)
        assert body["phase"] == phase and body["fit"]["position"] > 0
        found[phase] = (out, body)
    return config, found


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "insert", "overwrite"]),
        st.floats(0, 1),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=3,
)


@fuzz(300)
@given(phase=st.sampled_from(["freeevolve", "fcnn"]), edits=EDITS)
def test_damaged_checkpoint_bytes_are_refused(saved_checkpoints, tmp_path, phase, edits):
    check_damaged_bytes(saved_checkpoints, tmp_path, phase, edits)


@pytest.mark.slow
@fuzz(5000)
@given(phase=st.sampled_from(["freeevolve", "fcnn"]), edits=EDITS)
def test_many_damaged_checkpoints_are_refused(saved_checkpoints, tmp_path, phase, edits):
    check_damaged_bytes(saved_checkpoints, tmp_path, phase, edits)


def check_damaged_bytes(saved_checkpoints, tmp_path, phase, edits):
    TALLY["inputs tried"] += 1
    config, found = saved_checkpoints
    source, body = found[phase]
    data = bytearray((source / CHECKPOINT_NAME).read_bytes())
    for kind, where, blob in edits:
        at = int(where * max(len(data) - 1, 0))
        if not data:
            data[:] = blob
        elif kind == "flip":
            data[at] ^= blob[0] or 1
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = blob
        else:
            data[at : at + len(blob)] = blob
    run = Path(tempfile.mkdtemp(dir=tmp_path))
    (run / CHECKPOINT_NAME).write_bytes(bytes(data))
    shape = data_shape(6, 3, 240)
    try:
        loaded = load_run_state(run, config.to_dict(), shape)
    except CheckpointError as error:
        assert "\n" not in str(error)
    else:  # only bytes that carry no content (zip padding, timestamps) may change
        assert loaded is not None and digest(loaded) == digest(body)


def _paths(value, prefix=()):
    """Every place in a nested body; long lists only at their ends."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, (list, tuple)):
        indices = range(len(value)) if len(value) <= 3 else (0, len(value) - 1)
        for index in indices:
            yield from _paths(value[index], (*prefix, index))


DELETE, SCRAMBLE, WIDEN = object(), object(), object()


def _replaced(value, path, new):
    if not path:
        if new is SCRAMBLE and isinstance(value, torch.Tensor):
            return value.flip(0) if value.dim() else value * -3
        if new is WIDEN and isinstance(value, torch.Tensor):
            return value.double() if value.is_floating_point() else value.float()
        return None if new in (SCRAMBLE, WIDEN, DELETE) else new
    key, rest = path[0], path[1:]
    items = dict(value) if isinstance(value, dict) else list(value)
    if not rest and new is DELETE:
        del items[key]
    else:
        items[key] = _replaced(value[key], rest, new)
    return tuple(items) if isinstance(value, tuple) else items


TENSORS = st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 3), max_size=3),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]),
)
REPLACEMENTS = st.one_of(
    st.sampled_from([DELETE, SCRAMBLE, WIDEN, None, True, {}, [], "", float("nan")]),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=4),
    st.lists(st.integers(-3, 3), max_size=3),
    TENSORS,
)


@fuzz(40)
@given(phase=st.sampled_from(["freeevolve", "fcnn"]), data=st.data(), new=REPLACEMENTS)
def test_malformed_checkpoint_contents_end_in_a_documented_outcome(
    saved_checkpoints, tmp_path, phase, data, new
):
    check_malformed_contents(saved_checkpoints, tmp_path, phase, data, new)


@pytest.mark.slow
@fuzz(1000)
@given(phase=st.sampled_from(["freeevolve", "fcnn"]), data=st.data(), new=REPLACEMENTS)
def test_many_malformed_checkpoint_contents(saved_checkpoints, tmp_path, phase, data, new):
    check_malformed_contents(saved_checkpoints, tmp_path, phase, data, new)


def check_malformed_contents(saved_checkpoints, tmp_path, phase, data, new):
    """Contents changed behind a valid checksum (a forged file): refused, or training goes on."""
    TALLY["inputs tried"] += 1
    config, found = saved_checkpoints
    source, body = found[phase]
    path = data.draw(st.sampled_from(list(_paths(body))[1:]))
    run = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copy(source / "config.json", run / "config.json")
    save_checkpoint(run / CHECKPOINT_NAME, _replaced(body, path, new))
    try:
        runs.train_run(config, toy_dataset(), run, show_progress=False, resume=True)
    except CheckpointError as error:
        assert "\n" not in str(error)
    except TrainingFailed:
        assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    else:
        assert json.loads((run / "summary.json").read_text())["status"] == "ok"


# ---------------------------------------------------------------------- 2. numerical failure


def test_learning_rate_10_fails_the_run_with_a_reason(tmp_path, run_cli, one_error_line):
    """The issue's example: the default model at --lr 10 diverges in its first epoch."""
    TALLY["faults injected"] += 1
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(
        ["train", "--lr", "10", "--epochs", "2", "--quiet", "--json", "--out", str(out)]
    )
    assert code == 1 and one_error_line(stderr, "training failed", "freeevolve")
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["freeevolve"]["status"] == "failed"
    assert "epoch 1" in summary["reason"] and "accuracy" not in json.dumps(summary)
    assert not (out / "freeevolve.pt").exists() and not (out / CHECKPOINT_NAME).exists()


def test_nan_loss_fails_the_run(tmp_path):
    TALLY["faults injected"] += 1
    data = toy_dataset()
    data.x_train[:] = float("nan")
    with pytest.raises(TrainingFailed, match="became nan at epoch 1, batch 1"):
        runs.train_run(TOY_CONFIG, data, tmp_path, show_progress=False)
    assert json.loads((tmp_path / "summary.json").read_text())["freeevolve"]["status"] == "failed"


# ---------------------------------------------------------------------- 3. interruption


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_resumes(
    tmp_path, slow_baseline, signum, status, one_error_line
):
    TALLY["faults injected"] += 1
    out = tmp_path / "run"
    process = start_cli(["train", *SLOW_ARGS, "--out", str(out)])
    wait_for(out / CHECKPOINT_NAME, process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 2 and "stopping after this batch" in lines[0], lines
    assert one_error_line(lines[1], "interrupted (checkpoint saved)", f"--resume {out}")
    assert intact(out) and not (out / "summary.json").exists()
    process = start_cli(["train", "--resume", str(out), "--quiet", "--json"])
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.decode().splitlines()[-1])["status"] == "ok"
    check_same(out, slow_baseline)


def test_a_second_process_cannot_train_in_a_run_directory_in_use(tmp_path):
    TALLY["faults injected"] += 1
    with freenets.atomic.exclusive(tmp_path):  # as a running `freenets train` holds it
        with pytest.raises(CheckpointError, match="another freenets process is training in"):
            runs.train_run(TOY_CONFIG, toy_dataset(), tmp_path, show_progress=False, resume=True)
    assert list(tmp_path.iterdir()) == []  # nothing written, no lock file left
    summary = runs.train_run(TOY_CONFIG, toy_dataset(), tmp_path, show_progress=False)
    assert summary["status"] == "ok"  # the lock went with its holder


def sigkill_until_done(out: Path, kills: int, seed: int) -> int:
    """Kill the run at random moments ``kills`` times, resuming each time; return kills done."""
    rng = random.Random(seed)
    done = 0
    args = ["train", *CLI_ARGS, "--out", str(out)]
    while True:
        process = start_cli(args)
        args = ["train", "--resume", str(out), "--quiet"]
        if done == kills:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr
            return done
        wait_for(out / "config.json", process)
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        done += 1
        TALLY["faults injected"] += 1
        ok = intact(out)
        lost_if(not ok)
        assert ok, sorted(p.name for p in out.iterdir())
        if (out / "summary.json").exists():  # it finished before the kill
            return done


def test_sigkill_at_random_moments_loses_nothing(tmp_path, cli_baseline):
    out = tmp_path / "run"
    sigkill_until_done(out, kills=2, seed=0)
    check_same(out, cli_baseline)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_sigkill_many_times_loses_nothing(tmp_path, cli_baseline, seed):
    out = tmp_path / "run"
    sigkill_until_done(out, kills=4, seed=seed)
    check_same(out, cli_baseline)


class Crash(BaseException):
    """The process dies: no handler runs."""


def crashing_writes(at: int, monkeypatch) -> list[Path]:
    """Make the ``at``-th atomic write die half way, leaving its temporary file as a kill would."""
    real = freenets.atomic._atomic
    written: list[Path] = []

    def atomic(path, write):
        written.append(Path(path))
        if len(written) != at:
            return real(path, write)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        half = Path(path).parent / f".{Path(path).name}.crash.tmp"
        half.write_bytes(b"\x50\x4b\x03\x04 half a file")
        raise Crash

    monkeypatch.setattr(freenets.atomic, "_atomic", atomic)
    return written


def test_a_crash_in_any_write_loses_nothing(tmp_path, toy_baseline, monkeypatch):
    """Die inside each of the run's atomic writes in turn, then resume: always the same result."""
    with monkeypatch.context() as patch:
        writes = crashing_writes(0, patch)
        runs.train_run(TOY_CONFIG, toy_dataset(), tmp_path / "count", show_progress=False)
    total = len(writes)
    # config, epochs, FreeEvolve done, epochs, then the results: history, freeevolve.pt and its
    # GraphML and DOT, fcnn.pt, masks.pt, summary (figures are off here: they are not results)
    assert total == 1 + 6 + 1 + 6 + 7
    for at in range(1, total + 1):
        out = tmp_path / f"crash-{at}"
        with monkeypatch.context() as patch:
            crashing_writes(at, patch)
            with pytest.raises(Crash):
                runs.train_run(TOY_CONFIG, toy_dataset(), out, show_progress=False)
        TALLY["faults injected"] += 1
        lost_if(not intact(out))
        assert intact(out)
        if at == 1:  # died writing config.json: nothing to resume, the run starts again
            with pytest.raises(CheckpointError, match="no config.json"):
                runs.read_config(out)
            runs.train_run(TOY_CONFIG, toy_dataset(), out, show_progress=False)
        else:
            config = runs.read_config(out)
            runs.train_run(config, toy_dataset(), out, show_progress=False, resume=True)
            assert not any(p.name.endswith(".tmp") for p in out.iterdir())  # resume tidied up
        check_same(out, toy_baseline)


# ---------------------------------------------------------------------- 5. environment faults


def test_full_disk_mid_run_one_line_then_resume(
    tmp_path, cli_baseline, monkeypatch, run_cli, one_error_line
):
    """No space left when the third checkpoint is written; once space is back, --resume."""
    TALLY["faults injected"] += 1
    real = freenets.atomic._atomic
    count = []

    def no_space_at_4(path, write):
        count.append(path)

        def failing(stream):
            stream.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real(path, failing if len(count) == 4 else write)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(freenets.atomic, "_atomic", no_space_at_4)
        code, _, stderr = run_cli(["train", *CLI_ARGS, "--out", str(out)])
    assert code == 1 and one_error_line(stderr, "No space left on device", CHECKPOINT_NAME)
    assert intact(out) and not any(p.name.endswith(".tmp") for p in out.iterdir())
    assert load_checkpoint(out / CHECKPOINT_NAME)["fit"]["epoch"] == 2
    code, _, stderr = run_cli(["train", "--resume", str(out), "--quiet"])
    assert code == 0, stderr
    check_same(out, cli_baseline)


def test_unwritable_out_one_line(tmp_path, monkeypatch, run_cli, one_error_line):
    a_file = tmp_path / "file"
    a_file.write_text("")
    TALLY["faults injected"] += 2
    code, _, stderr = run_cli(["train", *CLI_ARGS, "--out", str(a_file / "run")])
    assert code == 1 and one_error_line(stderr, str(a_file)), stderr

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))

    monkeypatch.setattr(freenets.atomic.tempfile, "mkstemp", denied)
    code, _, stderr = run_cli(["train", *CLI_ARGS, "--out", str(tmp_path / "run")])
    assert code == 1 and one_error_line(stderr, "Permission denied", str(tmp_path / "run")), stderr


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_real_full_and_read_only_file_systems(tmp_path, cli_baseline, run_cli, one_error_line):
    """A 48 KiB tmpfs fills up during the run; a read-only one refuses config.json."""
    if not _can_mount():
        pytest.skip("needs unshare and mount in a user namespace")
    TALLY["faults injected"] += 2
    mount = tmp_path / "mnt"
    mount.mkdir()
    command = " ".join([sys.executable, "-m", "freenets.cli", "train", *CLI_ARGS])
    script = (
        f"mount -t tmpfs -o size=48k tmpfs {mount} && {command} --out {mount}/run; "
        f"code=$?; cp -a {mount}/run {tmp_path}/copy; exit $code"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, capture_output=True)
    assert done.returncode == 1 and one_error_line(done.stderr.decode(), "No space left on device")
    copy_dir = tmp_path / "copy"
    assert intact(copy_dir)
    code, _, stderr = run_cli(["train", "--resume", str(copy_dir), "--quiet"])
    assert code == 0, stderr
    check_same(copy_dir, cli_baseline)
    script = f"mount -t tmpfs -o ro tmpfs {mount} && {command} --out {mount}/run"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, capture_output=True)
    assert done.returncode == 1 and one_error_line(done.stderr.decode(), "Read-only file system")


# ---------------------------------------------------------------------- 6. determinism


def test_same_seed_same_results_through_the_cli(tmp_path, cli_baseline, run_cli):
    for name in ("a", "b"):
        code, _, stderr = run_cli(["train", *CLI_ARGS, "--out", str(tmp_path / name)])
        assert code == 0, stderr
        check_same(tmp_path / name, cli_baseline)
    code, _, _ = run_cli(
        ["train", *CLI_ARGS[:-3], "--seed", "2", "--quiet", "--out", str(tmp_path / "c")]
    )
    assert code == 0
    other = run_results(tmp_path / "c")
    assert other["summary"]["seed"] == 2
    assert not torch.equal(other["fcnn"]["hidden.weight"], cli_baseline["fcnn"]["hidden.weight"])


def test_too_large_a_model_is_one_line(tmp_path, run_cli, one_error_line):
    """A million neurons need 4 TB of weights: the allocation fails, in one clear line."""
    TALLY["faults injected"] += 1
    code, _, stderr = run_cli(
        ["train", "--neurons", "1000000", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]
    )
    assert code == 1 and one_error_line(stderr, "not enough memory"), stderr
