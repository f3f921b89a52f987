"""The device of a run: --device for train and sweep, checkpoints that go on on any device.

This machine has no GPU: the CUDA path is tested for correctness only where CUDA exists (the
tests marked so are skipped here); on the CPU, "auto" must give the CPU's results bit for bit.
"""

from __future__ import annotations

import json

import pytest
import torch
from toy_runs import TOY_CONFIG, StopAfter, assert_same_results, run_results, toy_dataset

from freenets.errors import ConfigError, Interrupted
from freenets.experiments import runs
from freenets.training.config import resolve_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CUDA = torch.cuda.is_available()


def test_resolve_device_names_and_refusals():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if CUDA else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    with pytest.raises(ConfigError, match="got 'gpu0'"):
        resolve_device("gpu0")
    if not CUDA:
        with pytest.raises(ConfigError, match="CUDA, which is not available here"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="device"):
        TOY_CONFIG.replace(device="tpu").validate()


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_cuda_without_cuda_is_one_line(tmp_path, run_cli, one_error_line, command):
    argv = [command, "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "out")]
    if command == "sweep":
        argv += ["--datasets", "digits", "--neurons", "4", "--seeds", "1"]
    result = run_cli(argv)
    assert result.code == 2 and one_error_line(result.err, "CUDA, which is not available")
    assert not (tmp_path / "out").exists()


def test_a_run_records_its_device_and_goes_on_on_another(tmp_path):
    whole = tmp_path / "cpu"
    runs.train_run(TOY_CONFIG, toy_dataset(), whole, show_progress=False)
    assert json.loads((whole / "config.json").read_text())["device"] == "cpu"
    auto = TOY_CONFIG.replace(device="auto")
    part = tmp_path / "moved"
    with pytest.raises(Interrupted):
        runs.train_run(
            TOY_CONFIG, toy_dataset(), part, show_progress=False, should_stop=StopAfter(20)
        )
    runs.train_run(auto, toy_dataset(), part, show_progress=False, resume=True)
    if not CUDA and not torch.backends.mps.is_available():  # "auto" is the CPU here
        assert_same_results(run_results(part), run_results(whole))
    else:
        assert (part / "summary.json").exists()


def test_resume_takes_a_device_from_the_command_line(tmp_path, run_cli):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        runs.train_run(
            TOY_CONFIG, toy_dataset(), out, show_progress=False, should_stop=StopAfter(5)
        )
    result = run_cli(["train", "--resume", str(out), "--device", "tpu", "--quiet"])
    assert result.code == 2 and "device must be" in result.err


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_a_run_on_cuda_matches_the_cpu(tmp_path):
    cpu, gpu = tmp_path / "cpu", tmp_path / "cuda"
    runs.train_run(TOY_CONFIG, toy_dataset(), cpu, show_progress=False)
    runs.train_run(TOY_CONFIG.replace(device="cuda"), toy_dataset(), gpu, show_progress=False)
    a, b = run_results(cpu), run_results(gpu)
    for key, value in a["freenet"].items():
        torch.testing.assert_close(b["freenet"][key].float(), value.float(), atol=1e-3, rtol=1e-3)
    assert (
        abs(
            a["summary"]["freeevolve"]["test_accuracy"]
            - b["summary"]["freeevolve"]["test_accuracy"]
        )
        < 0.05
    )
