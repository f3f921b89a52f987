"""FreeNetClassifier and FreeNetRegressor: scikit-learn's estimator checks, and what they learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_blobs, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from freenets import FreeNetClassifier, FreeNetRegressor, graph

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@parametrize_with_checks([FreeNetClassifier(), FreeNetRegressor()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x, y


def test_cross_val_score_on_digits_in_a_pipeline(digits):
    x, y = digits
    pipeline = make_pipeline(MinMaxScaler(), FreeNetClassifier(random_state=0))
    scores = cross_val_score(pipeline, x, y, cv=3)
    assert scores.mean() >= 0.9, scores


def test_grid_search_picks_parameters_and_refits(digits):
    x, y = digits[0][:400], digits[1][:400]
    search = GridSearchCV(
        make_pipeline(
            MinMaxScaler(),
            FreeNetClassifier(max_iter=10, batch_size=32, learning_rate=0.01, random_state=0),
        ),
        {"freenetclassifier__n_neurons": [2, 12]},
        cv=2,
    )
    search.fit(x, y)
    assert search.best_params_ == {"freenetclassifier__n_neurons": 12}
    assert search.best_estimator_[-1].model_.n_neurons == 12
    assert search.score(x, y) > 0.8


def blobs(n_samples: int = 240):
    x, y = make_blobs(n_samples, centers=3, random_state=0)
    return StandardScaler().fit_transform(x), y


def test_string_labels_and_probabilities():
    x, index = blobs()
    names = np.array(["setosa", "versicolor", "virginica"])
    classifier = FreeNetClassifier(random_state=0).fit(x, names[index])
    assert list(classifier.classes_) == sorted(names)
    probabilities = classifier.predict_proba(x)
    assert probabilities.shape == (len(x), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    predicted = classifier.predict(x)
    assert predicted.dtype == names.dtype
    np.testing.assert_array_equal(predicted, classifier.classes_[probabilities.argmax(axis=1)])
    assert classifier.score(x, names[index]) > 0.9


def test_random_state_alone_fixes_the_result():
    x, y = blobs()
    with torch.random.fork_rng():  # the global generator must not matter
        torch.manual_seed(1)
        first = FreeNetClassifier(random_state=3).fit(x, y)
        torch.manual_seed(2)
        second = FreeNetClassifier(random_state=3).fit(x, y)
    other = FreeNetClassifier(random_state=4).fit(x, y)
    np.testing.assert_array_equal(first.predict_proba(x), second.predict_proba(x))
    assert not np.array_equal(first.predict_proba(x), other.predict_proba(x))


def test_evolution_changes_the_graph_and_is_recorded():
    x, y = blobs()
    evolved = FreeNetClassifier(epsilon=0.5, max_iter=30, n_iter_no_change=30, random_state=0)
    with pytest.warns(ConvergenceWarning):
        evolved.fit(x, y)
    history = evolved.history_
    assert len(history) == evolved.n_iter_ == 30
    assert [record["epoch"] for record in history] == list(range(1, 31))
    steps = [record for record in history if "added" in record]
    assert steps, "FreeEvolve never ran"
    assert sum(record["pruned"] for record in steps) > 0
    edges = graph.n_edges(graph.dense_mask(100))
    for record in history:  # each epoch is scored on its graph, then the round changes it
        assert record["edges"] == edges, record
        edges += record.get("added", 0) - record.get("pruned", 0)
    assert "added" not in history[-1]  # no change after the last epoch
    assert history[-1]["edges"] == evolved.model_.n_edges
    assert evolved.model_.n_edges != graph.n_edges(graph.dense_mask(100))
    assert evolved.evolver_.history[0].pruned == history[0]["pruned"]
    dense = FreeNetClassifier(rule=None, random_state=0).fit(x, y)
    assert torch.equal(dense.model_.mask, graph.dense_mask(100))
    assert all("added" not in record for record in dense.history_)


def test_early_stopping_keeps_the_best_validation_epoch():
    x, y = blobs(400)
    classifier = FreeNetClassifier(
        early_stopping=True, n_iter_no_change=3, max_iter=60, random_state=0
    ).fit(x, y)
    scores = [record["val_score"] for record in classifier.history_]
    assert classifier.n_iter_ == len(scores) <= 60
    best = int(np.argmax(scores)) + 1  # epochs count from 1
    # FreeEvolve's last round followed epoch `last`; the rule had converged from epoch last + 1.
    last = max(record["epoch"] for record in classifier.history_ if "added" in record)
    if classifier.n_iter_ < 60:  # stopped n_iter_no_change epochs after the best and convergence
        assert len(scores) - max(best, last + 1) == 3
    assert classifier.score(x, y) > 0.9
    assert classifier.validation_scores_ == scores
    assert classifier.best_validation_score_ == max(scores) and classifier.best_loss_ is None
    assert len(classifier.loss_curve_) == classifier.n_iter_
    plain = FreeNetClassifier(max_iter=5, random_state=0).fit(x, y)
    assert plain.validation_scores_ is None and plain.best_validation_score_ is None
    assert plain.best_loss_ == min(plain.loss_curve_) and len(plain.loss_curve_) == 5


def test_early_stopping_waits_for_the_rule_and_keeps_the_best_graph():
    """A rule that reshapes the graph for 8 rounds makes the validation score jump about; early
    stopping counts its patience only once the rule has converged, and keeps the best epoch's
    weights and graph."""
    from freenets.rules.base import TopologyRule

    class Shuffle(TopologyRule):
        name = "shuffle"

        def __init__(self):
            self.rounds = 0

        def after_round(self, model, info):
            self.rounds += 1
            keep = torch.rand(model.mask.shape, generator=info.generator) < 0.5
            return graph.dense_mask(model.mask.shape[0]) & keep

        @property
        def converged(self):
            return self.rounds >= 8

        def state_dict(self):
            return {"rounds": self.rounds}

        def load_state_dict(self, state):
            self.rounds = state["rounds"]

    x, y = blobs(400)
    classifier = FreeNetClassifier(
        n_neurons=30,
        rule=Shuffle(),
        early_stopping=True,
        n_iter_no_change=2,
        max_iter=40,
        random_state=0,
    ).fit(x, y)
    scores = classifier.validation_scores_
    edges = [record["edges"] for record in classifier.history_]
    assert len(set(edges[:9])) > 3  # the graph changed after each of the first 8 epochs
    # Not stopped while the graph was changing, whatever the scores did: the rule converged
    # after its 8th round (epoch 9 on), and 2 epochs of patience count from then at the soonest.
    assert classifier.n_iter_ >= 11
    best = int(np.argmax(scores))
    assert classifier.model_.n_edges == edges[best]  # the best epoch's graph is kept
    assert classifier.best_validation_score_ == scores[best]


def test_partial_fit_trains_one_epoch_per_call():
    x, y = blobs()
    classifier = FreeNetClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        classifier.partial_fit(x, y)
    for _ in range(8):
        classifier.partial_fit(x, y, classes=[0, 1, 2, 3])
    assert classifier.n_iter_ == 8
    assert classifier.predict_proba(x).shape == (len(x), 4)
    assert classifier.history_[-1]["loss"] < classifier.history_[0]["loss"]
    with pytest.raises(ValueError, match=r"labels \[7\] are not among the classes"):
        classifier.partial_fit(x[:5], np.full(5, 7))
    assert classifier.score(x, y) > 0.8


def test_regressor_fits_several_outputs():
    x, y = make_regression(300, n_features=5, n_targets=3, noise=0.1, random_state=0)
    y = y / y.std(axis=0)
    regressor = FreeNetRegressor(max_iter=40, random_state=0).fit(x, y)
    assert regressor.n_outputs_ == 3
    assert regressor.predict(x).shape == (300, 3)
    assert regressor.score(x, y) > 0.9
    single = FreeNetRegressor(max_iter=30, n_iter_no_change=30, random_state=0)
    with pytest.warns(ConvergenceWarning):
        single.fit(x, y[:, 0])
    assert single.predict(x).shape == (300,)
    for _ in range(3):
        single.partial_fit(x, y[:, 0])
    assert single.n_iter_ == 33
    with pytest.raises(ValueError, match="outputs"):
        single.partial_fit(x, y)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"epsilon": 1.5}, "epsilon"),
        ({"n_neurons": 0}, "n_neurons"),
        ({"max_epochs": 2.5}, "max_epochs"),
        ({"readd": "never"}, "readd"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"batch_size": True}, "batch_size"),
        ({"device": "toaster"}, "device"),
    ],
)
def test_bad_parameters_fail_in_fit_with_the_name(parameters, message):
    x, y = blobs(30)
    classifier = FreeNetClassifier(**parameters)  # __init__ only stores
    with pytest.raises(ValueError, match=message):
        classifier.fit(x, y)


def test_auto_device_picks_cuda_only_when_available():
    x, y = blobs(30)
    classifier = FreeNetClassifier(device="auto", max_iter=1).fit(x, y)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert classifier.device_.type == expected
    assert classifier.model_.weight.device.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_asking_for_cuda_without_it_is_a_clear_error():
    x, y = blobs(30)
    with pytest.raises(ValueError, match="CUDA, which is not available"):
        FreeNetClassifier(device="cuda").fit(x, y)


def test_the_docstring_example_holds():
    import doctest

    import freenets.estimator

    result = doctest.testmod(freenets.estimator)
    assert result.attempted > 0 and result.failed == 0


def test_the_estimator_trains_with_the_loop_of_the_command_line():
    """fit with FreeEvolveRule, the estimator's seeds and config, gives the estimator's model."""
    from freenets import FreeNet
    from freenets.rules.freeevolve import FreeEvolveRule
    from freenets.training.config import TrainConfig
    from freenets.training.loop import fit

    x, y = blobs()
    classifier = FreeNetClassifier(n_neurons=12, max_iter=6, schedule="cosine", random_state=0)
    classifier.fit(x, y)
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    model = FreeNet(2, 12, 3, generator=torch.Generator().manual_seed(seed))
    config = TrainConfig.of(n_neurons=12, epochs=6, batch_size=128, learning_rate=0.003, seed=seed)
    result = fit(
        "freenet",
        model,
        (torch.tensor(x, dtype=torch.float32), torch.tensor(y)),
        config,
        torch.Generator().manual_seed(seed + 7919),
        rule=FreeEvolveRule(classifier.epsilon),
    )
    for key, value in model.state_dict().items():
        assert torch.equal(classifier.model_.state_dict()[key], value), key
    assert [record["loss"] for record in classifier.history_] == [
        record.train_loss for record in result.epochs
    ]


def test_a_single_class_is_refused_like_a_regression_target():
    x, _ = blobs(30)
    with pytest.raises(ValueError, match="one class"):
        FreeNetClassifier(max_iter=1).fit(x, np.full(30, "cat"))
    with pytest.raises(ValueError, match="one class"):
        FreeNetClassifier(max_iter=1).partial_fit(x, np.ones(30), classes=[1])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        FreeNetClassifier(max_iter=1).fit(x, np.linspace(0, 1, 30))
    # A batch of partial_fit may hold one class, when classes names more.
    classifier = FreeNetClassifier(max_iter=1).partial_fit(x, np.ones(30), classes=[0, 1])
    assert list(classifier.classes_) == [0, 1]


def test_a_regressor_whose_validation_r2_stays_below_minus_one_returns_its_best_epoch():
    # Unscaled targets far from zero: three short epochs leave R^2 far below -1 on validation,
    # which once never beat the starting placeholder of -1 ("no best epoch").
    x, y = make_regression(200, n_features=4, noise=0.1, random_state=0)
    y = 5000.0 + y
    regressor = FreeNetRegressor(
        early_stopping=True, max_iter=3, n_iter_no_change=3, random_state=0
    ).fit(x, y)
    scores = [record["val_score"] for record in regressor.history_]
    assert len(scores) == 3 and max(scores) < -1
    assert np.isfinite(regressor.predict(x)).all()
