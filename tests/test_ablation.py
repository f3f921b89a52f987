"""The ablation sweep: every topology rule and baseline, each sized from FreeEvolve's run.

Tiny real sweeps (digits, k=8, four epochs, epsilon 0.7 so that FreeEvolve's edge count moves
every round: 8, 2, 4 edges after its three rounds for seed 0, none after the last epoch), with
real worker processes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from freenets.experiments.results import MODELS, read_results
from freenets.experiments.sweep import SweepConfig, run_sweep
from freenets.training.config import TrainConfig

K = 8
# RigL updates every 10 of its 44 steps (before 75% of them: steps 10, 20 and 30).
TRAIN = TrainConfig.of(epochs=4, epsilon=0.7, delta_t=10)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_by_model(rows):
    return {(row.seed, row.model): row for row in rows}


def history(out: Path, seed: int, model: str) -> dict:
    run = out / f"runs/digits-k{K}-s{seed}"
    path = run / "history.json" if model in ("freeevolve", "fcnn") else run / model / "history.json"
    return json.loads(path.read_text())[model]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablation")
    config = SweepConfig(("digits",), (K,), seeds=2, train=TRAIN, models=MODELS)
    summary = run_sweep(config, out, jobs=2, show_progress=False)
    assert (summary.total, summary.ran, summary.failed) == (2, 2, 0)
    return out


def test_one_row_per_model_and_seed(ablation):
    rows = read_results(ablation / "results.csv")
    assert sorted((row.seed, row.model) for row in rows) == sorted(
        (seed, model) for seed in range(2) for model in MODELS
    )
    assert all(row.ok and 0.0 <= row.test_accuracy <= 1.0 for row in rows)
    assert rows_by_model(rows)[(0, "dense")].run_dir == f"runs/digits-k{K}-s0/dense"
    assert rows_by_model(rows)[(0, "fcnn")].run_dir == f"runs/digits-k{K}-s0"


def test_edge_counts_follow_each_rule(ablation):
    rows = rows_by_model(read_results(ablation / "results.csv"))
    for seed in range(2):
        freeevolve = rows[(seed, "freeevolve")]
        # The dense FreeNet keeps every edge i -> j, i < j.
        assert rows[(seed, "dense")].edges == K * (K - 1) // 2
        assert [r["edges"] for r in history(ablation, seed, "dense")["rounds"]] == []
        # SET and RigL train at the budget of the chosen FreeEvolve model's edges.
        assert rows[(seed, "set")].edges == freeevolve.edges
        assert rows[(seed, "rigl")].edges == freeevolve.edges
        for epoch in history(ablation, seed, "set")["epochs"]:
            assert epoch["edges"] == freeevolve.edges
        # Random and magnitude prune and add as many edges as FreeEvolve in each of its rounds.
        evolved = history(ablation, seed, "freeevolve")["rounds"]
        churn = [(r["pruned"], r["added"], r["edges"]) for r in evolved]
        assert len({edges for _, _, edges in churn}) > 1  # the counts move: a real check
        for model in ("random", "magnitude"):
            rounds = history(ablation, seed, model)["rounds"]
            assert [(r["pruned"], r["added"], r["edges"]) for r in rounds] == churn
    assert [r["edges"] for r in history(ablation, 0, "freeevolve")["rounds"]] == [8, 2, 4]


def test_layered_baselines_match_freeevolve_parameters(ablation):
    rows = rows_by_model(read_results(ablation / "results.csv"))
    for seed in range(2):
        target = rows[(seed, "freeevolve")].params
        fcnn, fcnn2 = rows[(seed, "fcnn")], rows[(seed, "fcnn2")]
        assert abs(fcnn.params - target) <= 10 // 2 + 1  # baselines.matching_width's bound
        assert abs(fcnn2.params - target) <= (fcnn2.hidden + 10) // 2 + 1  # matching_width2's
        summary = json.loads(
            (ablation / f"runs/digits-k{K}-s{seed}/fcnn2/summary.json").read_text()
        )
        assert summary["param_gap"] == pytest.approx((fcnn2.params - target) / target, abs=1e-6)


def test_models_share_the_split_order_and_initial_weights(ablation):
    # Until FreeEvolve's first round (the end of epoch 1) the FreeNets that start dense train
    # the same graph: the same first-epoch loss, to the bit, means the same training samples,
    # in the same order, from the same initial weights.
    for seed in range(2):
        losses = {
            model: history(ablation, seed, model)["epochs"][0]["train_loss"]
            for model in ("freeevolve", "dense", "random", "magnitude")
        }
        assert len(set(losses.values())) == 1, losses
    first = {history(ablation, seed, "dense")["epochs"][0]["train_loss"] for seed in range(2)}
    assert len(first) == 2  # and the seeds differ


def test_adding_models_trains_only_those(tmp_path):
    out = tmp_path / "sweep"
    pair = SweepConfig(("digits",), (K,), seeds=1, train=TRAIN)
    run_sweep(pair, out, show_progress=False)
    before = read_results(out / "results.csv")
    run = out / f"runs/digits-k{K}-s0"
    stamp = (run / "summary.json").stat().st_mtime_ns
    more = dataclasses.replace(pair, models=("freeevolve", "fcnn", "dense", "rigl"))
    summary = run_sweep(more, out, show_progress=False)
    assert (summary.total, summary.skipped, summary.ran) == (1, 0, 1)
    after = read_results(out / "results.csv")
    assert after[: len(before)] == before  # the pair's rows stay, timings included
    assert [(r.seed, r.model) for r in after[len(before) :]] == [(0, "dense"), (0, "rigl")]
    assert (run / "summary.json").stat().st_mtime_ns == stamp  # FreeEvolve was not retrained
    again = run_sweep(more, out, show_progress=False)
    assert (again.skipped, again.ran) == (1, 0)
    assert read_results(out / "results.csv") == after


def test_models_sized_by_freeevolve_train_it_without_its_row(tmp_path):
    out = tmp_path / "sweep"
    config = SweepConfig(("digits",), (K,), seeds=1, train=TRAIN, models=("magnitude",))
    run_sweep(config, out, show_progress=False)
    rows = read_results(out / "results.csv")
    assert [row.model for row in rows] == ["magnitude"]
    run = out / f"runs/digits-k{K}-s0"
    evolved = json.loads((run / "summary.json").read_text())  # FreeEvolve's run, trained first
    assert evolved["status"] == "ok"
    # Asked for later, FreeEvolve's row comes from that run directory, not from a new training.
    stamp = (run / "summary.json").stat().st_mtime_ns
    with_it = dataclasses.replace(config, models=("magnitude", "freeevolve"))
    run_sweep(with_it, out, show_progress=False)
    freeevolve = next(r for r in read_results(out / "results.csv") if r.model == "freeevolve")
    assert freeevolve.test_accuracy == evolved["freeevolve"]["test_accuracy"]
    assert (run / "summary.json").stat().st_mtime_ns == stamp


def test_density_budget_needs_no_freeevolve(tmp_path):
    out = tmp_path / "sweep"
    config = SweepConfig(
        ("digits",), (K,), seeds=1, train=TRAIN, models=("set", "rigl"), densities=(0.5,)
    )
    run_sweep(config, out, show_progress=False)
    rows = read_results(out / "results.csv")
    assert [(r.model, r.edges) for r in rows] == [("set", 14), ("rigl", 14)]  # 0.5 * 28
    assert not (out / f"runs/digits-k{K}-s0/summary.json").exists()
    # The budget is an axis of the grid: another one adds its points.
    other = dataclasses.replace(config, densities=(0.5, 0.25))
    run_sweep(other, out, show_progress=False)
    rows = read_results(out / "results.csv")
    assert [(r.model, r.budget, r.edges) for r in rows] == [
        ("set", 0.5, 14),
        ("rigl", 0.5, 14),
        ("set", 0.25, 7),
        ("rigl", 0.25, 7),
    ]
    assert not (out / f"runs/digits-k{K}-s0/summary.json").exists()


def test_a_model_killed_mid_training_resumes_to_the_same_result(tmp_path, monkeypatch):
    """A job dies right after a model's second checkpoint; the rerun goes on from it."""
    from freenets.data import load_digits
    from freenets.experiments import jobs

    dataset = load_digits()
    config = TRAIN.replace(n_neurons=K, seed=1)
    models = (("magnitude", None), ("rigl", None))  # (model, budget): sized from FreeEvolve
    uninterrupted = jobs.train_runs(config, dataset, tmp_path / "fresh", models)

    save, saved = jobs.save_checkpoint, []

    def save_then_die(path, body):
        save(path, body)
        saved.append(body["fit"]["epoch"])
        if body["model"] == "rigl" and len(saved) == TRAIN.optim.epochs + 2:
            raise KeyboardInterrupt  # as SIGKILL would: nothing more is written

    monkeypatch.setattr(jobs, "save_checkpoint", save_then_die)
    run_dir = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        jobs.train_runs(config, dataset, run_dir, models)
    assert (run_dir / "magnitude/summary.json").exists()  # finished before the kill
    assert (run_dir / "rigl/checkpoint.pt").exists()
    assert not (run_dir / "rigl/summary.json").exists()
    monkeypatch.undo()

    train_saved, states = jobs.train_saved, []

    def recording(name, *args, **kwargs):
        states.append((name, None if kwargs["state"] is None else kwargs["state"].epoch))
        return train_saved(name, *args, **kwargs)

    monkeypatch.setattr(jobs, "train_saved", recording)
    resumed = jobs.train_runs(config, dataset, run_dir, models)
    assert states == [("rigl", 2)]  # magnitude reused, RigL from its epoch-2 checkpoint
    assert not (run_dir / "rigl/checkpoint.pt").exists()

    def numbers(outcomes):
        return {m: {k: v for k, v in s.items() if k != "seconds"} for m, s in outcomes.items()}

    assert numbers(resumed) == numbers(uninterrupted)
    fresh = json.loads((tmp_path / "fresh/rigl/history.json").read_text())["rigl"]
    again = json.loads((run_dir / "rigl/history.json").read_text())["rigl"]
    assert [e["train_loss"] for e in again["epochs"]] == [e["train_loss"] for e in fresh["epochs"]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "freeevolve,lottery"], "unknown model 'lottery'; choose from: freeevolve,"),
        (["--models", "set", "--density", "1.5"], "--density must lie in (0, 1], got 1.5"),
    ],
)
def test_model_usage_errors_are_one_line(tmp_path, run_cli, extra, message):
    args = ["sweep", "--datasets", "digits", "--neurons", "3", "--out", str(tmp_path / "o")]
    result = run_cli([*args, *extra])
    assert result.code == 2 and result.one_error_line(message), result.err
    assert not (tmp_path / "o").exists()


def test_sweep_figure_of_every_model(ablation):
    from matplotlib.figure import Figure

    from freenets.reporting.figures import write_sweep_figures
    from freenets.reporting.plots import ablation_accuracy

    entries = {entry.name: entry for entry in write_sweep_figures(ablation)}
    assert {"figure5", "ablation"} <= set(entries)
    figures = ablation / "figures"
    lines = (figures / entries["ablation"].data).read_text().splitlines()
    assert lines[0] == "dataset,model,neurons,mean,std,n"
    assert sorted(line.split(",")[1] for line in lines[1:]) == sorted(MODELS)
    assert all(line.split(",")[-1] == "2" for line in lines[1:])  # two seeds each
    paper = (figures / entries["figure5"].data).read_text().splitlines()[1:]
    assert sorted(line.split(",")[1] for line in paper) == ["fcnn", "freeevolve"]
    # Figure 6 shows every rule that changed its graph, RigL's updates included.
    with open(figures / entries["figure6"].data, newline="") as stream:
        changes = list(csv.DictReader(stream))
    panels = {row["panel"] for row in changes}
    assert {f"digits, k={K}, seed 0", f"digits, k={K}, seed 0, rigl"} <= panels
    rigl = [row for row in changes if row["panel"].endswith("rigl")]
    recorded = history(ablation, 0, "rigl")["rounds"]
    assert [int(row["round"]) for row in rigl] == [r["round"] for r in recorded]
    assert [r["step"] for r in recorded] == [10, 20, 30]

    rows = [
        {"dataset": "digits", "model": model, "neurons": k, "mean": 0.5, "std": 0.1, "n": 3}
        for model in ("freeevolve", "rigl", "fcnn2")
        for k in (8, 16)
    ]
    figure = ablation_accuracy(rows)
    assert isinstance(figure, Figure)
    (axis,) = figure.axes
    assert [text.get_text() for text in axis.get_legend().get_texts()] == [
        "FreeEvolve",
        "RigL",
        "FCNN2",
    ]
    assert len(axis.containers) == 3  # one errorbar container per model


def test_report_shows_the_table_of_every_model(ablation):
    import html

    from freenets.experiments.table import MODEL_HEADER, model_cells, model_rows
    from freenets.reporting.html import render

    page = render(ablation)
    cells = model_rows(model_cells(read_results(ablation / "results.csv")))
    assert [row[2] for row in cells] == list(MODELS)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in MODEL_HEADER)
    assert f"<thead><tr>{header}</tr></thead>" in page
    for row in cells:
        assert "".join(f"<td>{html.escape(value)}</td>" for value in row) in page


@pytest.mark.slow
def test_ray_backend_gives_the_local_results_for_every_model(tmp_path):
    pytest.importorskip("ray")
    models = ("freeevolve", "dense", "magnitude", "fcnn2")
    config = SweepConfig(("digits",), (K,), seeds=2, train=TRAIN, models=models)
    local = run_sweep(config, tmp_path / "local", jobs=2, show_progress=False)
    remote = run_sweep(config, tmp_path / "ray", backend="ray", jobs=2, show_progress=False)
    assert (remote.ran, remote.failed) == (2, 0)

    def comparable(rows):
        return sorted(
            (dataclasses.replace(row, seconds=None) for row in rows),
            key=lambda row: (row.seed, row.model),
        )

    rows = comparable(read_results(remote.results))
    assert rows == comparable(read_results(local.results))
    assert [row.model for row in rows if row.seed == 0] == sorted(models)


def test_models_sized_by_a_failed_freeevolve_fail_with_its_reason(tmp_path):
    # An absurd step size makes the loss NaN in the first epoch of every model.
    train = TrainConfig.of(epochs=1, learning_rate=1e30)
    models = ("freeevolve", "dense", "rigl", "fcnn2")
    config = SweepConfig(("digits",), (3,), seeds=1, train=train, models=models)
    summary = run_sweep(config, tmp_path, show_progress=False)
    assert (summary.ran, summary.failed) == (1, 1)
    rows = {row.model: row for row in read_results(tmp_path / "results.csv")}
    assert all(not row.ok and row.test_accuracy is None for row in rows.values())
    assert rows["freeevolve"].reason.startswith("freeevolve: the training loss became nan")
    # RigL's budget and FCNN2's size come from FreeEvolve: they fail with its reason, untrained.
    assert rows["rigl"].reason == rows["fcnn2"].reason == rows["freeevolve"].reason
    assert not (tmp_path / "runs/digits-k3-s0/rigl").exists()
    # The dense FreeNet needs no FreeEvolve run: it trained, and diverged on its own.
    assert rows["dense"].reason.startswith("dense: the training loss became nan")
    failed = json.loads((tmp_path / "runs/digits-k3-s0/dense/summary.json").read_text())
    assert failed == {"status": "failed", "reason": rows["dense"].reason}
