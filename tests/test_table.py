"""The results file and the table built from it, on synthetic results with hand-computed numbers."""

from __future__ import annotations

import csv
import io
import math

import pytest

from freenets.errors import DataError
from freenets.experiments.results import (
    COLUMNS,
    ResultRow,
    append_job,
    finished_jobs,
    format_results,
    read_results,
)
from freenets.experiments.seed_stats import paired_differences, t_interval
from freenets.experiments.table import (
    HEADER,
    MODEL_HEADER,
    PAPER_DATASETS,
    PAPER_NEURONS,
    failed_runs,
    format_csv,
    format_markdown,
    model_cells,
    model_rows,
    paper_table2,
    summarise,
    table_rows,
    write_tables,
)

# Student t quantiles t_{0.975, df} from a printed table (not from scipy), for df = 1, 2, 4.
T975 = {1: 12.706204736174707, 2: 4.302652729749464, 4: 2.7764451051977987}


def ok(dataset: str, k: int, seed: int, model: str, accuracy: float, params: int) -> ResultRow:
    return ResultRow(
        dataset=dataset,
        neurons=k,
        seed=seed,
        model=model,
        status="ok",
        test_accuracy=accuracy,
        val_accuracy=accuracy - 0.01,
        params=params,
        edges=100 if model == "freeevolve" else None,
        hidden=None if model == "freeevolve" else 20,
        best_epoch=3,
        seconds=1.5,
        run_dir=f"runs/{dataset}-k{k}-s{seed}",
    )


def failed(dataset: str, k: int, seed: int, model: str, reason: str) -> ResultRow:
    return ResultRow(dataset, k, seed, model, "failed", reason=reason, run_dir="runs/x")


@pytest.fixture
def rows() -> list[ResultRow]:
    return [
        # mnist k=30: three seeds, every run fine.
        ok("mnist", 30, 0, "freeevolve", 0.90, 1000),
        ok("mnist", 30, 0, "fcnn", 0.89, 1010),
        ok("mnist", 30, 1, "freeevolve", 0.92, 1002),
        ok("mnist", 30, 1, "fcnn", 0.90, 1010),
        ok("mnist", 30, 2, "freeevolve", 0.94, 1004),
        ok("mnist", 30, 2, "fcnn", 0.94, 1010),
        # digits k=8: seed 2 diverged, so seeds 0 and 1 are the only pairs.
        ok("digits", 8, 0, "freeevolve", 0.50, 600),
        ok("digits", 8, 0, "fcnn", 0.40, 610),
        ok("digits", 8, 1, "freeevolve", 0.70, 620),
        ok("digits", 8, 1, "fcnn", 0.50, 610),
        failed("digits", 8, 2, "freeevolve", "freeevolve: training loss became nan at epoch 2"),
        failed("digits", 8, 2, "fcnn", "freeevolve: training loss became nan at epoch 2"),
        # digits k=4: the only seed diverged.
        failed("digits", 4, 0, "freeevolve", "freeevolve: training loss became inf at epoch 1"),
        failed("digits", 4, 0, "fcnn", "freeevolve: training loss became inf at epoch 1"),
    ]


def test_paper_table_is_packaged_whole():
    paper = paper_table2()
    assert len(paper) == len(PAPER_DATASETS) * len(PAPER_NEURONS) * 2
    assert {key[0] for key in paper} == set(PAPER_DATASETS)
    assert {key[1] for key in paper} == set(PAPER_NEURONS)
    # Spot checks against the paper's Table 2.
    assert paper[("mnist", 30, "freeevolve")] == 95.63
    assert paper[("mnist", 30, "fcnn")] == 95.74
    assert paper[("fashion-mnist", 80, "freeevolve")] == 89.2
    assert paper[("emnist", 100, "fcnn")] == 84.98


def test_t_interval_matches_hand_computation():
    interval = t_interval([1.0, 2.0, 0.0])  # mean 1, sample sd 1
    half = T975[2] / math.sqrt(3)
    assert interval.n == 3
    assert interval.mean == pytest.approx(1.0)
    assert interval.low == pytest.approx(1.0 - half)
    assert interval.high == pytest.approx(1.0 + half)
    five = t_interval([0.5, -0.25, 1.0, 0.75, 0.0])  # mean 0.4, sample variance 1.075 / 4
    assert five.high - five.mean == pytest.approx(T975[4] * math.sqrt(1.075 / 4) / math.sqrt(5))
    single = t_interval([2.5])
    assert single.mean == 2.5 and math.isnan(single.low) and math.isnan(single.high)
    assert t_interval([]).n == 0


def test_summary_numbers(rows):
    cells = {(c.dataset, c.neurons): c for c in summarise(rows)}
    # Sorted with the paper's datasets first, then by neurons.
    assert [(c.dataset, c.neurons) for c in summarise(rows)] == [
        ("mnist", 30),
        ("digits", 4),
        ("digits", 8),
    ]
    mnist = cells[("mnist", 30)]
    assert (mnist.seeds, mnist.failed) == (3, 0)
    assert mnist.freeevolve.mean == pytest.approx(92.0)
    assert mnist.freeevolve.std == pytest.approx(2.0)
    assert mnist.fcnn.mean == pytest.approx(91.0)
    assert mnist.fcnn.std == pytest.approx(math.sqrt(7.0))  # deviations -2, -1, 3 -> 14 / 2
    # Per-seed differences 1, 2, 0 percentage points.
    assert mnist.difference.mean == pytest.approx(1.0)
    assert mnist.difference.low == pytest.approx(1.0 - T975[2] / math.sqrt(3))
    assert mnist.difference.high == pytest.approx(1.0 + T975[2] / math.sqrt(3))
    assert mnist.freeevolve_params == pytest.approx(1002.0)
    assert (mnist.paper_freeevolve, mnist.paper_fcnn) == (95.63, 95.74)

    digits = cells[("digits", 8)]
    assert (digits.seeds, digits.failed) == (3, 1)
    assert digits.freeevolve.n == 2 and digits.freeevolve.mean == pytest.approx(60.0)
    assert digits.freeevolve.std == pytest.approx(math.sqrt(200.0))
    # Differences 10 and 20 over the two seeds where both models finished.
    assert digits.difference.n == 2
    assert digits.difference.mean == pytest.approx(15.0)
    half = T975[1] * math.sqrt(50.0) / math.sqrt(2)
    assert digits.difference.high == pytest.approx(15.0 + half)
    assert math.isnan(digits.paper_freeevolve)

    gone = cells[("digits", 4)]
    assert (gone.seeds, gone.failed, gone.freeevolve.n, gone.difference.n) == (1, 1, 0, 0)


def test_table_files_mark_failures(tmp_path, rows):
    md_path, csv_path = write_tables(tmp_path, rows)
    markdown = md_path.read_text()
    assert (
        "| mnist | 30 | 92.00 ± 2.00 | 91.00 ± 2.65 | 95.63 | 95.74 | +1.00 [-1.48, +3.48] |"
        in (markdown)
    )
    assert "| digits | 4 | failed | failed | - | - | n/a |" in markdown
    assert "## Failed runs (4)" in markdown
    assert "- digits, k=8, seed 2, freeevolve: freeevolve: training loss became nan at epoch 2" in (
        markdown
    )
    # Only FreeEvolve and FCNN: no table of every model in table.md.
    assert "# Every model" not in markdown
    # table.csv: one row per (dataset, neurons, model), FreeEvolve's paired against the FCNN.
    table = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [(r["dataset"], r["neurons"], r["model"], r["failed"]) for r in table] == [
        ("mnist", "30", "freeevolve", "0"),
        ("mnist", "30", "fcnn", "0"),
        ("digits", "4", "freeevolve", "1"),
        ("digits", "4", "fcnn", "1"),
        ("digits", "8", "freeevolve", "1"),
        ("digits", "8", "fcnn", "1"),
    ]
    assert float(table[0]["vs_fcnn_low"]) == pytest.approx(1.0 - T975[2] / math.sqrt(3), 1e-4)
    assert float(table[0]["mean"]) == pytest.approx(92.0) and table[0]["paper"] == "95.63"
    assert table[1]["vs_fcnn_mean"] == "" and table[0]["vs_dense_mean"] == ""  # no dense here
    assert table[2]["mean"] == "" and table[2]["n"] == "0"
    assert format_csv(model_cells(rows)) == csv_path.read_text()
    assert format_markdown(summarise(rows), rows) == markdown


def test_table_rows_are_the_cells_as_text(rows):
    """The rows that table.md and the HTML report both show, column by column."""
    mnist, gone, digits = table_rows(summarise(rows))
    assert dict(zip(HEADER, mnist, strict=True)) == {
        "dataset": "mnist",
        "k": "30",
        "FreeEvolve": "92.00 ± 2.00",
        "FCNN": "91.00 ± 2.65",
        "paper FreeEvolve": "95.63",
        "paper FCNN": "95.74",
        "difference [95% CI]": "+1.00 [-1.48, +3.48]",
        "params FreeEvolve / FCNN": "1002 / 1010",
        "seeds": "3",
        "failed": "",
    }
    assert gone == ("digits", "4", "failed", "failed", "-", "-", "n/a", "- / -", "1", "1")
    assert digits[2:4] == ("60.00 ± 14.14", "45.00 ± 7.07") and digits[-1] == "1"
    failures = failed_runs(rows)
    assert [(r.neurons, r.seed, r.model) for r in failures] == [
        (4, 0, "fcnn"),
        (4, 0, "freeevolve"),
        (8, 2, "fcnn"),
        (8, 2, "freeevolve"),
    ]


def test_results_round_trip_exactly(tmp_path, rows):
    strange = failed("digits", 9, 0, "fcnn", 'odd, "quoted"\nreason')
    path = tmp_path / "results.csv"
    path.write_text(format_results([*rows, strange]))
    back = read_results(path)
    assert back[: len(rows)] == rows
    assert back[-1].reason == 'odd, "quoted" reason'  # one physical line per row
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert len(path.read_text().splitlines()) == len(rows) + 2


def test_append_job_never_duplicates(tmp_path, rows):
    path = tmp_path / "results.csv"
    append_job(path, rows[:2])
    append_job(path, rows[2:4])
    append_job(path, rows[:2])  # the same job again replaces its rows
    back = read_results(path)
    assert sorted(back, key=lambda r: (r.seed, r.model)) == sorted(
        rows[:4], key=lambda r: (r.seed, r.model)
    )
    assert finished_jobs(back) == {("mnist", 30, 0), ("mnist", 30, 1)}
    assert finished_jobs(rows[:3]) == {("mnist", 30, 0)}  # seed 1 lacks its FCNN row


def test_read_results_rejects_other_files(tmp_path):
    assert read_results(tmp_path / "absent.csv") == []
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a sweep's results.csv"):
        read_results(other)
    broken = tmp_path / "broken.csv"
    broken.write_text(",".join(COLUMNS) + "\ndigits,eight,0,fcnn,ok,,,,,,,,,\n")
    with pytest.raises(DataError, match="broken.csv:2"):
        read_results(broken)


def ablation_rows() -> list[ResultRow]:
    """digits k=8, four seeds: FreeEvolve, FCNN, the dense FreeNet and RigL; RigL's seed 3 fails."""
    accuracies = {
        "freeevolve": [0.80, 0.82, 0.78, 0.81],
        "fcnn": [0.79, 0.80, 0.79, 0.78],
        "dense": [0.81, 0.80, 0.77, 0.83],
        "rigl": [0.70, 0.75, 0.72, None],
    }
    rows = []
    for model, values in accuracies.items():
        for seed, accuracy in enumerate(values):
            if accuracy is None:
                rows.append(failed("digits", 8, seed, model, "rigl: training loss became nan"))
            else:
                rows.append(ok("digits", 8, seed, model, accuracy, 600 + seed))
    return rows


def test_paired_intervals_of_every_model_match_scipy():
    from scipy import stats

    rows = ablation_rows()
    cells = {c.model: c for c in model_cells(rows)}
    assert list(cells) == ["freeevolve", "dense", "rigl", "fcnn"]  # the MODELS order

    def expected(differences: list[float]) -> tuple[float, float, float]:
        mean = sum(differences) / len(differences)
        low, high = stats.t.interval(
            0.95, len(differences) - 1, loc=mean, scale=stats.sem(differences)
        )
        return mean, low, high

    # FreeEvolve - FCNN per seed: +1, +2, -1, +3 points.
    mean, low, high = expected([1.0, 2.0, -1.0, 3.0])
    interval = cells["freeevolve"].vs_fcnn
    assert interval is not None and interval.n == 4
    assert (interval.mean, interval.low, interval.high) == pytest.approx((mean, low, high))
    # FreeEvolve - dense: -1, +2, +1, -2.
    mean, low, high = expected([-1.0, 2.0, 1.0, -2.0])
    interval = cells["freeevolve"].vs_dense
    assert (interval.mean, interval.low, interval.high) == pytest.approx((mean, low, high))
    # RigL's failed seed 3 is left out of its pairs: -9, -5, -7 against the FCNN.
    mean, low, high = expected([-9.0, -5.0, -7.0])
    interval = cells["rigl"].vs_fcnn
    assert interval.n == 3
    assert (interval.mean, interval.low, interval.high) == pytest.approx((mean, low, high))
    rigl = cells["rigl"]
    assert (rigl.seeds, rigl.failed, rigl.accuracy.n) == (4, 1, 3)
    assert rigl.accuracy.mean == pytest.approx(72.333333, 1e-6)
    assert rigl.accuracy.std == pytest.approx(float(stats.tstd([70.0, 75.0, 72.0])))
    # A model is not compared with itself.
    assert cells["fcnn"].vs_fcnn is None and cells["dense"].vs_dense is None
    # FCNN - dense: -2, 0, +2, -5.
    mean, low, high = expected([-2.0, 0.0, 2.0, -5.0])
    interval = cells["fcnn"].vs_dense
    assert interval is not None and interval.n == 4
    assert (interval.mean, interval.low, interval.high) == pytest.approx((mean, low, high))
    assert math.isnan(cells["dense"].paper) and cells["freeevolve"].edges == 100.0
    assert math.isnan(cells["fcnn"].edges)  # a layered model has no edge count


def test_every_model_table_in_markdown_and_csv(tmp_path):
    rows = ablation_rows()
    md_path, csv_path = write_tables(tmp_path, rows)
    markdown = md_path.read_text()
    # Table 2 first, then every model, then the failure.
    assert markdown.index("# FreeEvolve vs FCNN") < markdown.index("# Every model")
    assert "## Failed runs (1)" in markdown
    text = dict(zip(MODEL_HEADER, model_rows(model_cells(rows))[0], strict=True))
    assert text["model"] == "freeevolve"
    assert text["test accuracy"] == "80.25 ± 1.71"
    assert text["vs FCNN [95% CI]"].startswith("+1.25 [")
    assert text["vs dense [95% CI]"].startswith("+0.00 [")
    assert "| " + " | ".join(model_rows(model_cells(rows))[2]) + " |" in markdown
    table = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["model"] for r in table] == ["freeevolve", "dense", "rigl", "fcnn"]
    assert table[2]["failed"] == "1" and table[2]["vs_fcnn_n"] == "3"


def test_paired_differences_use_common_seeds_only():
    model = {0: ok("d", 3, 0, "set", 0.5, 1), 2: ok("d", 3, 2, "set", 0.7, 1)}
    other = {0: ok("d", 3, 0, "fcnn", 0.4, 1), 1: ok("d", 3, 1, "fcnn", 0.9, 1)}
    assert paired_differences(model, other) == pytest.approx([10.0])


def test_a_new_model_joins_its_job_without_replacing_the_others(tmp_path):
    path = tmp_path / "results.csv"
    pair = [ok("mnist", 30, 0, "freeevolve", 0.9, 10), ok("mnist", 30, 0, "fcnn", 0.8, 10)]
    append_job(path, pair)
    dense = [ok("mnist", 30, 0, "dense", 0.85, 11)]
    append_job(path, dense)
    append_job(path, dense)  # a rerun of the same model replaces its row only
    assert read_results(path) == pair + dense
    assert finished_jobs(read_results(path)) == {("mnist", 30, 0)}
    assert finished_jobs(read_results(path), ("freeevolve", "fcnn", "rigl")) == set()


def test_a_model_left_out_of_the_sweep_is_a_dash_not_a_failure():
    rows = [ok("digits", 8, 0, "freeevolve", 0.8, 600), ok("digits", 8, 0, "dense", 0.7, 610)]
    (cell,) = table_rows(summarise(rows))
    assert cell[2:4] == ("80.00", "-")
    markdown = format_markdown(summarise(rows), rows)
    assert "| digits | 8 | 80.00 | - | - | - | n/a |" in markdown
    assert "| digits | 8 | dense | 70.00 | - | - | - | 610 | - | 1 |  |" in markdown


def test_the_detectable_difference_against_a_hand_computation():
    from freenets.experiments.seed_stats import detectable_difference

    values = [0.1, -0.3, 0.2, 0.4, -0.1]  # mean 0.06, sample std 0.2701851, n = 5
    # t_{0.975, 4} = 2.7764451 and t_{0.8, 4} = 0.9409646 (tables of Student's t):
    # (2.7764451 + 0.9409646) * 0.2701851 / sqrt(5) = 0.449176
    assert detectable_difference(values) == pytest.approx(0.449176, abs=1e-5)
    assert math.isnan(detectable_difference([0.3]))
    # More seeds of the same spread resolve smaller differences.
    assert detectable_difference(values * 4) < detectable_difference(values)
