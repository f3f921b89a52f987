"""The estimators train to convergence as scikit-learn's MLP defines it, and say when they do not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from freenets.estimator import FreeNetClassifier, FreeNetRegressor
from freenets.training.callbacks import EarlyStopping


def blobs(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n, n_features=4, centers=3, cluster_std=1.0, random_state=0)
    return (x - x.min(0)) / (x.max(0) - x.min(0)), y


def no_improvement_counts(values: list[float], tol: float, lower_is_better: bool) -> list[int]:
    """scikit-learn's ``_update_no_improvement_count``, epoch by epoch, written out again."""
    best = np.inf if lower_is_better else -np.inf
    count, counts = 0, []
    for value in values:
        worse = value > best - tol if lower_is_better else value < best + tol
        count = count + 1 if worse else 0
        best = min(best, value) if lower_is_better else max(best, value)
        counts.append(count)
    return counts


def test_fit_stops_once_the_loss_plateaus_and_not_before():
    x, y = blobs()
    classifier = FreeNetClassifier(
        n_neurons=16, tol=1e-3, n_iter_no_change=3, schedule="cosine", random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # it converged: no warning
        classifier.fit(x, y)
    assert classifier.n_iter_ < classifier.max_iter
    converged = max(r["epoch"] for r in classifier.history_ if "added" in r)  # last round
    # Counted from the rule's convergence (after its last round): then sklearn's count.
    after = [0] * converged + no_improvement_counts(
        classifier.loss_curve_[converged:], 1e-3, lower_is_better=True
    )
    stops = [epoch for epoch, count in enumerate(after, 1) if count > 3]
    assert stops and stops[0] == classifier.n_iter_  # the first epoch past n_iter_no_change
    assert len(classifier.loss_curve_) == classifier.n_iter_


def test_the_count_follows_scikit_learns_rule_without_a_rule():
    x, y = blobs()
    classifier = FreeNetClassifier(
        n_neurons=16, rule=None, tol=1e-3, n_iter_no_change=2, schedule="cosine"
    )
    classifier.set_params(random_state=0).fit(x, y)
    counts = no_improvement_counts(classifier.loss_curve_, 1e-3, lower_is_better=True)
    assert counts[-1] == 3 and all(count <= 2 for count in counts[:-1])


def test_max_iter_reached_warns_as_scikit_learn_does():
    x, y = blobs()
    with pytest.warns(ConvergenceWarning, match=r"max_iter \(3 epochs\) reached"):
        classifier = FreeNetClassifier(n_neurons=8, max_iter=3, random_state=0).fit(x, y)
    assert classifier.n_iter_ == 3
    # scikit-learn's MLP warns in the same case with the same category.
    with pytest.warns(ConvergenceWarning):
        MLPClassifier(max_iter=3, random_state=0).fit(x, y)


def test_max_epochs_is_an_alias_that_warns():
    x, y = blobs(120)
    with pytest.warns(FutureWarning, match="max_epochs is deprecated"):
        old = FreeNetClassifier(n_neurons=8, max_epochs=4, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            old.fit(x, y)
    assert old.n_iter_ <= 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        new = FreeNetClassifier(n_neurons=8, max_iter=4, random_state=0).fit(x, y)
    np.testing.assert_array_equal(old.predict_proba(x), new.predict_proba(x))


@pytest.mark.parametrize(("value", "name"), [(-1e-3, "tol"), (0, "max_iter"), (2.5, "max_iter")])
def test_bad_convergence_settings_are_refused(value, name):
    x, y = blobs(60)
    with pytest.raises(ValueError, match=name):
        FreeNetClassifier(**{name: value}).fit(x, y)


def test_fitted_attributes_have_scikit_learns_shapes_and_meanings():
    x, y = blobs()
    ours = FreeNetClassifier(n_neurons=16, early_stopping=True, random_state=0).fit(x, y)
    theirs = MLPClassifier(early_stopping=True, max_iter=500, random_state=0).fit(x, y)
    for fitted in (ours, theirs):
        assert isinstance(fitted.n_iter_, int)
        assert len(fitted.loss_curve_) == fitted.n_iter_
        assert len(fitted.validation_scores_) == fitted.n_iter_
        assert fitted.best_validation_score_ == max(fitted.validation_scores_)
    regressor = FreeNetRegressor(n_neurons=8, random_state=0).fit(x, y.astype(float))
    assert regressor.best_loss_ == min(regressor.loss_curve_)
    assert regressor.validation_scores_ is None


def test_early_stopping_on_a_noisy_score_waits_and_keeps_the_best():
    """A validation score that swings up and down: the count restarts on each real improvement,
    stops only past n_iter_no_change, and the loop keeps the best epoch."""

    class Loop:
        rule = None
        stop = False
        epoch = 0

    class Record:
        def __init__(self, val: float) -> None:
            self.val_accuracy, self.train_loss = val, 0.0

    noisy = [0.70, 0.78, 0.67, 0.81, 0.69, 0.80, 0.79, 0.81, 0.70, 0.805]
    stopper = EarlyStopping(3, tol=0.005)
    loop = Loop()
    for epoch, score in enumerate(noisy, 1):
        loop.epoch = epoch
        stopper.on_epoch_end(loop, Record(score))  # type: ignore[arg-type]
        if loop.stop:
            break
    # 0.81 at epoch 4; epochs 5-8 fail to beat it by 0.005 (the tie at epoch 8 included).
    assert loop.stop and loop.epoch == 8
    assert no_improvement_counts(noisy[:8], 0.005, lower_is_better=False)[-1] == 4


def test_a_plateau_divides_the_step_by_five_and_stops_only_at_a_millionth():
    """``reduce``: scikit-learn's ``learning_rate="adaptive"`` (its ``trigger_stopping``): on
    each plateau the step is divided by 5 and the count starts again, until a plateau finds the
    step at or below 1e-6."""

    class Optim:
        learning_rate = 1e-3

    class Config:
        optim = Optim()

    class Loop:
        rule = None
        stop = False
        epoch = 0
        config = Config()
        lr_factor = 1.0

    class Record:
        val_accuracy, train_loss = None, 1.0

    stopper = EarlyStopping(2, tol=1e-4, monitor="loss", reduce=5.0)
    loop, steps = Loop(), []
    while not loop.stop:
        loop.epoch += 1
        steps.append(Optim.learning_rate * loop.lr_factor)
        stopper.on_epoch_end(loop, Record())  # type: ignore[arg-type]
    # The first epoch improves on infinity; each plateau is 3 epochs (more than 2 in a row).
    expected = [1e-3 / 5**r for r in range(6)]  # the last, 3.2e-7, is the first <= 1e-6
    assert steps == pytest.approx([1e-3] + [s for s in expected for _ in range(3)])
    assert stopper.stopped and loop.epoch == 1 + 3 * 6


def test_the_adaptive_schedule_trains_on_past_plateaus_with_smaller_steps():
    x, y = blobs()
    settings = dict(n_neurons=16, tol=1e-3, n_iter_no_change=2, max_iter=500, random_state=0)
    constant = FreeNetClassifier(schedule="constant", **settings).fit(x, y)
    adaptive = FreeNetClassifier(schedule="adaptive", **settings).fit(x, y)
    # The same epochs until the first plateau, where the constant step stops.
    assert adaptive.loss_curve_[: constant.n_iter_] == constant.loss_curve_
    assert adaptive.n_iter_ > constant.n_iter_
    # It stopped on a plateau at a step of 0.003 / 5^5 <= 1e-6, not at max_iter.
    assert adaptive.n_iter_ < 500
    assert adaptive.optimizer_.param_groups[0]["lr"] == pytest.approx(0.003 / 5**5)
    with pytest.raises(ValueError, match="'cosine', 'constant' or 'adaptive'"):
        FreeNetClassifier(schedule="plateau").fit(x, y)
