"""Epsilon and density as axes of a sweep, and the budgeted random and magnitude baselines.

The sweeps are tiny (digits, a few neurons, one or two epochs); the workers are real.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from freenets import graph
from freenets.errors import ConfigError
from freenets.experiments.results import COLUMNS, format_results, read_results
from freenets.experiments.study import study_points
from freenets.experiments.sweep import SweepConfig, run_sweep
from freenets.model import FreeNet
from freenets.rules import make_rule
from freenets.rules.base import RoundInfo
from freenets.training.config import TrainConfig

TINY = ["--datasets", "digits", "--epochs", "2", "--train-size", "200", "--quiet"]


def test_grid_axes_land_in_results_and_a_rerun_adds_points(tmp_path, run_cli):
    out = tmp_path / "sweep"
    models = "freeevolve,fcnn,set,random,magnitude,dense"
    base = ["sweep", *TINY, "--neurons", "6", "--seeds", "1", "--models", models]
    first = run_cli([*base, "--epsilon", "0.25,0.5", "--density", "match,0.2", "--out", str(out)])
    assert first.code == 0, first.err
    rows = read_results(out / "results.csv")
    runs = {(r.model, r.epsilon, r.budget) for r in rows}
    sized = ("freeevolve", "fcnn", "set", "random", "magnitude")
    assert runs == {
        *{(m, e, None) for m in sized for e in (0.25, 0.5)},
        ("dense", None, None),
        *{(m, None, 0.2) for m in ("set", "random", "magnitude")},
    }
    assert len(rows) == len(runs)  # each once, whatever the number of epsilons
    possible = 6 * 5 // 2
    for row in rows:
        assert row.ok
        if row.model == "fcnn":
            assert row.density is None
        else:
            assert row.density == pytest.approx(row.edges / possible)
        if row.budget is not None:  # the chosen model is at its budget (0.2 of 15: 3 edges)
            assert row.edges == 3
    # The run directories: FreeEvolve at a non-default epsilon has its own, budgets their own.
    assert {r.run_dir for r in rows if r.model == "freeevolve"} == {
        "runs/digits-k6-s0",
        "runs/digits-k6-s0-e0.5",
    }
    assert {r.run_dir for r in rows if r.budget} == {
        f"runs/digits-k6-s0/{m}-d0.2" for m in ("set", "random", "magnitude")
    }
    grid = json.loads((out / "sweep.json").read_text())["grid"]
    assert grid["epsilons"] == [0.25, 0.5] and grid["densities"] == [None, 0.2]
    table = (out / "table.md").read_text()
    assert "| digits | 6, ε=0.5 | set d=0.2 |" in table
    # The sweep's figures: accuracy against density too, from exactly these rows.
    index = json.loads((out / "figures" / "index.json").read_text())
    assert "density" in {entry["name"] for entry in index["figures"]}
    with (out / "figures" / "density.csv").open() as stream:
        drawn = list(csv.DictReader(stream))
    expected = study_points("digits, k=6", rows)
    assert sorted((d["series"], float(d["mean"])) for d in drawn) == sorted(
        (p.series, p.mean) for p in expected
    )
    # More points of both axes: only those train.
    again = run_cli(
        [*base, "--epsilon", "0.25,0.5,0.75", "--density", "match,0.2,0.1", "--out", str(out)]
    )
    assert again.code == 0, again.err
    after = read_results(out / "results.csv")
    assert [r for r in after if r.run in {row.run for row in rows}] == rows
    added = {(r.model, r.epsilon, r.budget) for r in after} - runs
    assert added == {
        *{(m, 0.75, None) for m in ("freeevolve", "fcnn", "set", "random", "magnitude")},
        *{(m, None, 0.1) for m in ("set", "random", "magnitude")},
    }


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--epsilon", "0.25,x", "--epsilon: expected comma-separated numbers, got '0.25,x'"),
        ("--epsilon", "0.25,1.5", "--epsilon must lie in (0, 1), got 1.5"),
        ("--density", "0.5,1.5", "--density must lie in (0, 1], got 1.5"),
        ("--density", "0", "--density must lie in (0, 1], got 0.0"),
        ("--density", "matched", "expected comma-separated densities or 'match', got 'matched'"),
    ],
)
def test_bad_axis_values_are_one_line(tmp_path, run_cli, option, value, message):
    args = ["sweep", *TINY, "--neurons", "4", "--out", str(tmp_path / "s"), option, value]
    result = run_cli(args)
    assert result.code == 2 and result.one_error_line(message), result.err
    assert not (tmp_path / "s" / "results.csv").exists()


def test_a_sweep_written_before_the_axes_gets_them(tmp_path):
    """Rows of the old columns take the sweep's epsilon (and SET's old --density) and resume."""
    out = tmp_path / "sweep"
    train = TrainConfig.of(epochs=1, train_size=200)
    config = SweepConfig(("digits",), (4,), seeds=1, train=train, models=("freeevolve", "fcnn"))
    run_sweep(config, out, show_progress=False)
    rows = read_results(out / "results.csv")
    # Rewrite the files as a sweep written before the axes: no axis columns, epsilon a setting.
    old_columns = COLUMNS[: COLUMNS.index("epsilon")]
    lines = format_results(rows).splitlines()
    width = len(old_columns)
    (out / "results.csv").write_text(
        "\n".join(",".join(line.split(",")[:width]) for line in lines) + "\n"
    )
    settings = json.loads((out / "sweep.json").read_text())
    settings["settings"]["epsilon"] = 0.25
    (out / "sweep.json").write_text(json.dumps(settings))
    assert all(r.epsilon is None for r in read_results(out / "results.csv"))
    summary = run_sweep(config, out, show_progress=False)
    assert (summary.skipped, summary.ran) == (1, 0)
    assert read_results(out / "results.csv") == rows


def test_axes_validate_in_the_api():
    with pytest.raises(ConfigError, match=r"--density must lie in \(0, 1\], got 2"):
        SweepConfig(("digits",), (4,), densities=(None, 2)).validate()
    with pytest.raises(ConfigError, match=r"--epsilon must lie in \(0, 1\), got 0"):
        SweepConfig(("digits",), (4,), epsilons=(0.5, 0)).validate()
    with pytest.raises(ConfigError, match="--density needs at least one value"):
        SweepConfig(("digits",), (4,), densities=()).validate()


def test_budgeted_random_is_a_static_graph_of_its_budget():
    model = FreeNet(3, 20, 2)
    rule = make_rule("random", density=0.1)
    generator = torch.Generator().manual_seed(0)
    mask = rule.initial_mask(model, generator)
    assert mask is not None and graph.n_edges(mask) == 19  # 0.1 of 190, rounded half up
    assert rule.converged  # it never changes the graph again
    model.mask.copy_(mask)
    assert rule.after_round(model, RoundInfo(0, 1, None, generator, 10)) is None
    with pytest.raises(ConfigError, match="changes or a budget, not both"):
        make_rule("random", changes=[(1, 0)], density=0.1)


def test_budgeted_magnitude_prunes_gradually_by_the_cubic_schedule():
    model = FreeNet(3, 20, 2)
    torch.nn.init.normal_(model.weight, generator=torch.Generator().manual_seed(1))
    rule = make_rule("magnitude", density=0.1, stop=0.5)
    generator = torch.Generator().manual_seed(0)
    counts = []
    for epoch in range(1, 10):  # rounds after epochs 1..9 of 10: T = floor(0.5 * 9) = 4
        before = model.mask.clone()
        proposal = rule.after_round(model, RoundInfo(epoch - 1, epoch, None, generator, 10))
        if proposal is not None:
            # The smallest |weight| of the present edges went, nothing was added.
            assert not (proposal & ~before).any()
            gone = before & ~proposal
            kept = model.weight.detach().abs()[proposal]
            assert model.weight.detach().abs()[gone].max() <= kept.min()
            model.mask.copy_(proposal)
        counts.append(graph.n_edges(model.mask))
        expected = round(19 + (190 - 19) * max(0.0, 1 - epoch / 4) ** 3)
        assert counts[-1] == expected
        assert rule.converged == (epoch >= 4)
        assert rule.selectable(model.mask) == (epoch >= 4)
    assert counts[3:] == [19] * 6
    # Without the epoch count (an Evolver, a callback) it prunes to the budget at once.
    once = make_rule("magnitude", edges=5)
    fresh = FreeNet(3, 20, 2)
    proposal = once.after_round(fresh, RoundInfo(0, 1, None, generator))
    assert proposal is not None and graph.n_edges(proposal) == 5 and once.converged


def test_the_best_epoch_of_a_budgeted_rule_is_at_its_budget(tiny_digits):
    """A denser epoch that scores better before pruning ends is never the result."""
    from freenets.data import validation_split
    from freenets.training.models import Reference, train_model

    config = TrainConfig.of(n_neurons=12, epochs=6, seed=0)
    split = validation_split(tiny_digits.x_train, tiny_digits.y_train, 0.1, 0)
    empty = Reference(params=0, edges=0, round_changes=())
    result = train_model("magnitude", tiny_digits, split, config, empty, density=0.05)
    assert result.extra["edges"] == 3  # 0.05 of 66, rounded half up
    reached = next(r.epoch for r in result.epochs if r.edges == 3)
    assert result.best_epoch >= reached


@pytest.mark.parametrize("rule", ["random", "magnitude"])
def test_freenets_train_runs_a_budgeted_control_and_resumes_bit_identically(tmp_path, rule):

    from toy_runs import TOY_CONFIG, StopAfter, assert_same_results, run_results, toy_dataset

    from freenets.errors import Interrupted
    from freenets.experiments import runs

    config = TOY_CONFIG.replace(rule=rule, density=0.3)
    whole = tmp_path / "whole"
    summary = runs.train_run(config, toy_dataset(), whole, show_progress=False)
    k = config.model.n_neurons
    assert summary[rule]["edges"] == round(0.3 * k * (k - 1) / 2)  # the chosen model's graph
    assert not (tmp_path / "whole" / "freeevolve.pt").exists()  # no FreeEvolve run needed
    assert json.loads((whole / "config.json").read_text())["density"] == 0.3
    part = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        runs.train_run(config, toy_dataset(), part, show_progress=False, should_stop=StopAfter(9))
    runs.train_run(config, toy_dataset(), part, show_progress=False, resume=True)
    assert_same_results(run_results(part), run_results(whole))
