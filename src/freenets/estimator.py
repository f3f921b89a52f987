"""scikit-learn estimators that train a FreeNet with a topology rule (paper, Algorithm 1).

:class:`FreeNetClassifier` and :class:`FreeNetRegressor` follow scikit-learn's rules: ``__init__``
only stores its arguments, ``fit`` returns ``self``, learned attributes end in ``_``, and the
estimator checks pass (``sklearn.utils.estimator_checks``). They train with the same loop as
``freenets train`` (:func:`freenets.training.loop.fit`): Adam, its step size lowered on each
plateau of the training loss (``schedule="adaptive"``; a cosine as ``freenets train``'s, or a
constant, on request), the topology rule (FreeEvolve, :class:`~freenets.rules.freeevolve.FreeEvolveRule`, by default)
after every epoch but the last until the graph converges, and, with ``early_stopping``, the best
epoch on a held-out validation part. Their
defaults were chosen across tabular tasks by ``benchmarks/defaults_by_task.py`` (see the
parameters).
"""

# One concept, kept whole: FreeNet's scikit-learn estimators. The base holds all they share; the
# classifier and the regressor differ only in their targets and predictions (as in scikit-learn's
# own MLP module), and most of their length is the numpydoc scikit-learn asks of an estimator.

from __future__ import annotations

import copy
import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.func import functional_call

from freenets.errors import TargetError
from freenets.model import FreeNet
from freenets.rules import make_rule
from freenets.rules.base import TopologyRule, as_readd
from freenets.rules.freeevolve import FreeEvolveRule
from freenets.training.callbacks import EarlyStopping
from freenets.training.config import TrainConfig, resolve_device
from freenets.training.evolver import Evolver
from freenets.training.loop import Callback, fit, seeded_rule_generator
from freenets.training.models import generators
from freenets.training.optim import default_optimizer
from freenets.training.tasks import CLASSIFICATION, REGRESSION, Task

_PREDICT_BATCH = 4096
_SCHEDULES = ("cosine", "constant", "adaptive")
# "adaptive": the step divided by this at each plateau, as scikit-learn's learning_rate="adaptive".
_ADAPTIVE_DIVISOR = 5.0


class _FreeNetEstimator(BaseEstimator):
    """What :class:`FreeNetClassifier` and :class:`FreeNetRegressor` share: checks and training."""

    _task: Task

    def __init__(
        self,
        n_neurons: int = 100,
        *,
        epsilon: float = 0.5,
        rule: str | TopologyRule | None = "freeevolve",
        evolve: bool | None = None,
        max_iter: int = 200,
        tol: float = 1e-4,
        max_epochs: int | None = None,
        batch_size: int = 128,
        learning_rate: float = 3e-3,
        schedule: str = "adaptive",
        patience: int = 3,
        readd: str = "restore",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
    ) -> None:
        self.n_neurons = n_neurons
        self.epsilon = epsilon
        self.rule = rule
        self.evolve = evolve
        self.max_iter = max_iter
        self.tol = tol
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.patience = patience
        self.readd = readd
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ hooks for subclasses

    def _targets(self, y: np.ndarray, *, reset: bool, classes: Any = None) -> torch.Tensor:
        """Targets as a CPU tensor; with ``reset``, learn what the outputs are."""
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ checks and set-up

    def _check_params(self) -> None:
        """Raise ``ValueError`` naming the first parameter out of range (checked in ``fit``)."""
        names = ["n_neurons", "max_iter", "batch_size", "patience", "n_iter_no_change"]
        for name in names + (["max_epochs"] if self.max_epochs is not None else []):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got {tol!r}")
        for name in ("epsilon", "validation_fraction"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
        rate = self.learning_rate
        if not isinstance(rate, numbers.Real) or not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {rate!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(
                f"schedule must be 'cosine', 'constant' or 'adaptive', got {self.schedule!r}"
            )
        if self.readd not in ("restore", "zero"):
            raise ValueError(f"readd must be 'restore' or 'zero', got {self.readd!r}")

    def _training_data(self, X: Any, y: Any, *, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Validated float32 inputs and raw targets, with scikit-learn's error messages."""
        numeric = isinstance(self, RegressorMixin)
        return validate_data(
            self, X, y, reset=reset, dtype=np.float32, multi_output=numeric, y_numeric=numeric
        )

    def _epochs(self) -> int:
        """``max_iter``, or the deprecated ``max_epochs`` where given (with a FutureWarning)."""
        if self.max_epochs is None:
            return int(self.max_iter)
        warnings.warn(
            "max_epochs is deprecated and goes in the next release: use max_iter (an upper "
            "bound: training stops earlier once the loss, or with early_stopping the validation "
            "score, stops improving by tol)",
            FutureWarning,
            stacklevel=4,
        )
        return int(self.max_epochs)

    def _loop_schedule(self) -> str:
        """The training loop's schedule: "adaptive" is a constant step that a plateau lowers."""
        return "constant" if self.schedule == "adaptive" else self.schedule

    def _topology_rule(self) -> TopologyRule | None:
        """A fresh rule from ``rule`` (a copy of an instance: a refit starts it anew)."""
        rule = self.rule
        if self.evolve is not None:
            warnings.warn(
                "evolve is deprecated and goes in the next release: use rule='freeevolve' (the "
                "default) or rule=None for a fixed dense graph",
                FutureWarning,
                stacklevel=4,
            )
            if not self.evolve:
                return None
        if rule is None:
            return None
        if isinstance(rule, TopologyRule):
            return copy.deepcopy(rule)
        if rule == "freeevolve":  # the estimator's own FreeEvolve parameters
            readd = as_readd(self.readd)  # checked by _check_params already
            return FreeEvolveRule(self.epsilon, patience=self.patience, readd=readd)
        if isinstance(rule, str):
            return make_rule(rule)
        raise ValueError(f"rule must be a rule's name, a TopologyRule or None, got {rule!r}")

    def _initialise(self, n_train: int) -> None:
        """A fresh FreeNet, optimiser and Evolver; randomness from ``random_state`` only."""
        self._check_params()
        self.device_ = resolve_device(self.device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        # Independent streams for the initial weights, the order of the samples and the rule.
        init, self._shuffle = generators(seed)
        self._rule_generator = seeded_rule_generator(seed)
        self._seed = seed
        self._config = TrainConfig.of(
            n_neurons=int(self.n_neurons),
            epsilon=float(self.epsilon),
            epochs=self._epochs(),
            patience=int(self.patience),
            batch_size=int(self.batch_size),
            learning_rate=float(self.learning_rate),
            schedule=self._loop_schedule(),
            readd=self.readd,
            seed=seed,
        )
        self.model_ = FreeNet(
            self.n_features_in_, self.n_neurons, self._n_outputs(), generator=init
        )
        self.model_.to(self.device_)
        self.optimizer_ = default_optimizer(self.model_, self._config)
        rule = self._topology_rule()
        self.evolver_ = (
            None
            if rule is None
            else Evolver(
                self.model_,
                rule,
                self.optimizer_,
                generator=self._rule_generator,
                total_steps=self._config.optim.epochs
                * math.ceil(n_train / self._config.optim.batch_size),
            )
        )
        self.history_: list[dict[str, Any]] = []
        self.n_iter_ = 0
        # scikit-learn's MLP names for what the epochs measured.
        self.loss_curve_: list[float] = []
        self.validation_scores_: list[float] | None = [] if self.early_stopping else None
        self.best_validation_score_: float | None = None
        self.best_loss_: float | None = None

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32, device=self.device_)

    # ------------------------------------------------------------------ training

    def _train(
        self,
        train: tuple[torch.Tensor, torch.Tensor],
        *,
        epochs: int,
        schedule: str,
        validation: tuple[torch.Tensor, torch.Tensor] | None = None,
        callbacks: list[Callback] | None = None,
        warm_start: bool = False,
    ) -> None:
        """``epochs`` epochs of :func:`fit`, appended to ``history_``."""
        result = fit(
            type(self).__name__,
            self.model_,
            train,
            self._config.replace(epochs=epochs, schedule=schedule),
            self._shuffle,
            validation=validation,
            task=self._task,
            rule=self.evolver_.rule if self.evolver_ is not None else None,
            rule_generator=self._rule_generator,
            optimizer=self.optimizer_,
            warm_start=warm_start,
            callbacks=callbacks or [],
        )
        if self.evolver_ is not None:
            self.evolver_.history.extend(result.rounds)
        # A round is taken after its epoch is scored, when the next epoch starts: it belongs to
        # the epoch it ended with, 0 being the earlier call's last (``partial_fit``).
        rounds = {record.epoch: record for record in result.rounds if record.step is None}
        if 0 in rounds and self.history_:
            self.history_[-1].update(added=rounds[0].added, pruned=rounds[0].pruned)
        for epoch in result.epochs:
            record: dict[str, Any] = {"epoch": self.n_iter_ + epoch.epoch, "loss": epoch.train_loss}
            if epoch.epoch in rounds:
                record.update(added=rounds[epoch.epoch].added, pruned=rounds[epoch.epoch].pruned)
            record["edges"] = epoch.edges
            if validation is not None:
                record["val_score"] = epoch.val_accuracy
            self.history_.append(record)
        self.n_iter_ += len(result.epochs)
        self.loss_curve_.extend(epoch.train_loss for epoch in result.epochs)
        if validation is not None and self.validation_scores_ is not None:
            self.validation_scores_.extend(
                float(epoch.val_accuracy)
                for epoch in result.epochs
                if epoch.val_accuracy is not None
            )
            self.best_validation_score_ = result.val_accuracy
        else:
            self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else None

    def fit(self, X: Any, y: Any) -> _FreeNetEstimator:
        """Train a fresh FreeNet on ``(X, y)`` until it converges, for at most ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets: class labels for the classifier, numbers for the regressor.

        Returns
        -------
        self
            The fitted estimator. With ``early_stopping``, ``model_`` holds the weights and
            graph of the epoch with the best score on the held-out ``validation_fraction``.

        Warns
        -----
        ConvergenceWarning
            When ``max_iter`` epochs ran out before the criterion stopped improving.
        """
        X, y = self._training_data(X, y, reset=True)
        targets = self._targets(y, reset=True)
        self._initialise(X.shape[0])
        x, targets = self._tensor(X), targets.to(self.device_)
        epochs = self._config.optim.epochs
        stopper = EarlyStopping(
            int(self.n_iter_no_change),
            tol=float(self.tol),
            monitor="validation" if self.early_stopping else "loss",
            reduce=_ADAPTIVE_DIVISOR if self.schedule == "adaptive" else None,
        )
        if not self.early_stopping:
            self._train(
                (x, targets), epochs=epochs, schedule=self._loop_schedule(), callbacks=[stopper]
            )
        else:
            train, val = train_test_split(
                np.arange(x.shape[0]),
                test_size=self.validation_fraction,
                random_state=self._seed,
                stratify=targets.cpu().numpy() if isinstance(self, ClassifierMixin) else None,
            )
            train, val = (
                torch.from_numpy(train).to(self.device_),
                torch.from_numpy(val).to(self.device_),
            )
            self._train(
                (x[train], targets[train]),
                epochs=epochs,
                schedule=self._loop_schedule(),
                validation=(x[val], targets[val]),
                callbacks=[stopper],
            )
        if not stopper.stopped:
            what = "validation score" if self.early_stopping else "training loss"
            warnings.warn(
                f"{type(self).__name__}: max_iter ({epochs} epochs) reached and the {what} is "
                "still improving; raise max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _partial_fit(self, X: Any, y: Any, classes: Any = None) -> _FreeNetEstimator:
        first = not hasattr(self, "model_")
        X, y = self._training_data(X, y, reset=first)
        targets = self._targets(y, reset=first, classes=classes)
        if first:
            self._initialise(X.shape[0])
        # One epoch per call at the constant step size: there is no last epoch to decay towards.
        train = (self._tensor(X), targets.to(self.device_))
        self._train(train, epochs=1, schedule="constant", warm_start=not first)
        return self

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs, in eval mode and in float64.

        Evaluated in float64 (through a float64 view of the parameters, the model untouched) so
        that a sample's prediction does not depend on which other samples share its batch.
        """
        model = self.model_
        state = {
            name: value.to(torch.float64) if value.is_floating_point() else value
            for name, value in [*model.named_parameters(), *model.named_buffers()]
        }
        x = x.to(torch.float64)
        was_training = model.training
        model.eval()
        try:
            parts = [
                functional_call(model, state, (x[start : start + _PREDICT_BATCH],))
                for start in range(0, x.shape[0], _PREDICT_BATCH)
            ]
        finally:
            model.train(was_training)
        return torch.cat(parts) if parts else x.new_zeros((0, model.out_features))

    def _predict_outputs(self, X: Any) -> torch.Tensor:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        return self._outputs(self._tensor(X)).cpu()


class FreeNetClassifier(ClassifierMixin, _FreeNetEstimator):
    """A FreeNet classifier whose topology is learned (FreeEvolve by default), scikit-learn style.

    Trained with cross-entropy; ``early_stopping`` scores the held-out part by accuracy.

    Parameters
    ----------
    n_neurons : int, default 100
        Number of neurons k of the FreeNet.
    epsilon : float, default 0.5
        FreeEvolve's threshold in ``(0, 1)``: edges are added where NCAM, pruned where NCIM,
        exceeds ``1 - epsilon``.
    rule : str, TopologyRule or None, default "freeevolve"
        The topology rule: ``"freeevolve"`` (with ``epsilon``, ``patience`` and ``readd``), another
        name of :data:`freenets.rules.RULES` built with its defaults, a rule instance (a
        registered one such as ``SETRule(density=0.3)``, or your own subclass; each fit uses a
        fresh copy), or ``None`` for the dense FreeNet with a fixed graph. The rule changes the
        graph after every epoch but the last, once the epoch is scored, until it converges.
    evolve : bool, optional
        Deprecated (a ``FutureWarning``): ``False`` is ``rule=None``.
    max_iter : int, default 200
        At most this many epochs of ``fit`` (``MLPClassifier``'s meaning); it stops earlier once
        converged (``tol``, ``n_iter_no_change``), with a ``ConvergenceWarning`` if it never
        does (with the adaptive schedule, once the step has fallen to 1e-6). ``partial_fit``
        runs one epoch per call.
    tol : float, default 1e-4
        The improvement that counts: of the training loss (lower by ``tol``), or with
        ``early_stopping`` of the validation score (higher by ``tol``). Training stops once more
        than ``n_iter_no_change`` epochs in a row did not improve, counted from the rule's
        convergence (a graph still changing moves the scores for other reasons than the
        weights).
    max_epochs : int, optional
        Deprecated alias of ``max_iter`` (a ``FutureWarning``); given, it is the upper bound.
    batch_size : int, default 128
        Mini-batch size.
    learning_rate : float, default 0.003
        Adam's step size at the first epoch.
    schedule : {"adaptive", "cosine", "constant"}, default "adaptive"
        The step size over the epochs of ``fit``: ``"adaptive"`` as scikit-learn's MLP defines
        it for SGD, constant while the criterion improves, divided by 5 each time it has not
        improved by ``tol`` for more than ``n_iter_no_change`` epochs in a row (instead of
        stopping), training stopping only once the step is at or below 1e-6; decayed towards 0
        along a cosine over ``max_iter`` epochs; or constant. ``partial_fit`` keeps it constant.
    patience : int, default 3
        FreeEvolve steps without change after which the graph counts as converged and is frozen.
    readd : {"restore", "zero"}, default "restore"
        A re-added edge resumes its stored weight, or starts from zero.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified), stop once the
        validation accuracy has not improved by ``tol`` for more than ``n_iter_no_change``
        epochs in a row after the rule converged, and keep the best epoch's weights and graph.
    validation_fraction : float, default 0.1
        Fraction held out when ``early_stopping``.
    n_iter_no_change : int, default 10
        Epochs in a row without an improvement of ``tol`` that are tolerated.
    random_state : int, RandomState instance or None, default None
        Seeds the initial weights and the order of the samples (through ``torch.Generator``).
    device : str, default "cpu"
        Torch device to train on; ``"auto"`` picks CUDA when available.

    Notes
    -----
    The training is ``freenets train``'s, FreeEvolve's patience included, but to convergence.
    The neurons, step size, batch size, epsilon, tolerance and schedule (100, 0.003, 128, 0.5,
    1e-4, adaptive) were chosen by cross-validation over eight tabular tasks, four of
    scikit-learn's bundled sets and four generated ones (``benchmarks/defaults_by_task.py``,
    which also scores the choice made without each task on that task: a nested estimate); the
    adaptive schedule's best mean score (0.8898) was above the cosine's (0.8862).

    Attributes
    ----------
    model_ : FreeNet
        The trained model.
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` has string column names.
    history_ : list of dict
        One record per epoch: ``epoch``, ``loss``, ``edges`` (the graph the epoch trained and was
        scored on), ``added`` and ``pruned`` when a FreeEvolve step followed it (never after the
        last epoch), ``val_score`` with early stopping.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        The training loss of each epoch (as ``MLPClassifier``'s).
    validation_scores_ : list of float or None
        The held-out accuracy of each epoch with ``early_stopping``, else ``None``.
    best_validation_score_ : float or None
        The best of them, that of the model kept; ``None`` without ``early_stopping``.
    best_loss_ : float or None
        The lowest training loss without ``early_stopping``, else ``None``.
    optimizer_ : torch.optim.Adam
        The optimiser, kept for ``partial_fit``.
    evolver_ : Evolver or None
        The rule's state (``evolver_.converged``, ``evolver_.history`` of the topology
        changes); its ``rule`` is what the training loop asks. ``None`` without a rule.
    device_ : torch.device
        The device the model lives on.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> classifier = FreeNetClassifier(random_state=0).fit(X / 16, y)
    >>> classifier.predict(X[:3] / 16)
    array([0, 1, 2])
    """

    _task = CLASSIFICATION

    def _targets(self, y: np.ndarray, *, reset: bool, classes: Any = None) -> torch.Tensor:
        check_classification_targets(y)
        if reset:
            self.classes_ = np.unique(y if classes is None else classes)
            if len(self.classes_) < 2:
                # As scikit-learn's classifiers do: one class leaves nothing to learn.
                raise TargetError(
                    f"y holds one class only ({self.classes_[0]!r}); a classifier needs at least "
                    "two classes"
                )
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {classes!r} differ from those of the first call")
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[index], y):
            unknown = sorted(set(np.unique(y).tolist()) - set(self.classes_.tolist()))
            raise ValueError(f"labels {unknown} are not among the classes {self.classes_.tolist()}")
        return torch.as_tensor(index, dtype=torch.long)

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> FreeNetClassifier:
        """Train one epoch (and one FreeEvolve step) on ``(X, y)``, starting a model if needed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,)
            Labels, all among ``classes``.
        classes : array-like, optional
            Every label that will ever be seen; required on the first call.

        Returns
        -------
        self
        """
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._partial_fit(X, y, classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)``, each row summing to 1."""
        return torch.softmax(self._predict_outputs(X), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label of each sample."""
        index = self._predict_outputs(X).argmax(dim=1).numpy()
        return self.classes_[index]


class FreeNetRegressor(RegressorMixin, _FreeNetEstimator):
    """A FreeNet regressor (mean squared error, one or several outputs), scikit-learn style.

    Parameters
    ----------
    n_neurons : int, default 50
        Number of neurons k of the FreeNet.
    epsilon, rule, evolve, max_iter, tol, max_epochs : optional
        As for :class:`FreeNetClassifier` (defaults 0.5, "freeevolve", None, 200, 1e-3, None).
    batch_size : int, default 32
        Mini-batch size.
    learning_rate : float, default 0.001
        Adam's step size at the first epoch.
    schedule : {"adaptive", "cosine", "constant"}, default "adaptive"
        As for :class:`FreeNetClassifier`.
    patience, readd : optional
        As for :class:`FreeNetClassifier` (defaults 3, "restore").
    early_stopping, validation_fraction, n_iter_no_change : optional
        As for :class:`FreeNetClassifier` (defaults False, 0.1, 10), scoring the held-out part
        with R^2 averaged over the outputs; the split is not stratified.
    random_state : int, RandomState instance or None, default None
        Seeds the initial weights and the order of the samples (through ``torch.Generator``).
    device : str, default "cpu"
        Torch device to train on; ``"auto"`` picks CUDA when available.

    Attributes
    ----------
    model_ : FreeNet
        The trained model, one output per target.
    n_outputs_ : int
        Number of targets.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` has string column names.
    history_ : list of dict
        One record per epoch (see :class:`FreeNetClassifier`).
    n_iter_ : int
        Epochs run.
    loss_curve_, validation_scores_, best_validation_score_, best_loss_
        As for :class:`FreeNetClassifier` (the validation score is R^2).
    optimizer_ : torch.optim.Adam
        The optimiser, kept for ``partial_fit``.
    evolver_ : Evolver or None
        The rule's state (see :class:`FreeNetClassifier`).
    device_ : torch.device
        The device the model lives on.

    Notes
    -----
    The targets are not rescaled; standardise them (``TransformedTargetRegressor``) when their
    scale is far from 1. The neurons, step size, batch size, epsilon, tolerance and schedule
    (50, 0.001, 32, 0.5, 1e-3, adaptive) were chosen as the classifier's, on four regression
    tasks (``benchmarks/defaults_by_task.py``; best mean R^2 0.8535 adaptive, 0.8522 cosine).
    """

    _task = REGRESSION

    # scikit-learn reads each parameter's default from the signature of __init__ (get_params,
    # clone): the regressor's own defaults need a signature of their own.
    def __init__(
        self,
        n_neurons: int = 50,
        *,
        epsilon: float = 0.5,
        rule: str | TopologyRule | None = "freeevolve",
        evolve: bool | None = None,
        max_iter: int = 200,
        tol: float = 1e-3,
        max_epochs: int | None = None,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        schedule: str = "adaptive",
        patience: int = 3,
        readd: str = "restore",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(
            n_neurons,
            epsilon=epsilon,
            rule=rule,
            evolve=evolve,
            max_iter=max_iter,
            tol=tol,
            max_epochs=max_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            schedule=schedule,
            patience=patience,
            readd=readd,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            random_state=random_state,
            device=device,
        )

    def _targets(self, y: np.ndarray, *, reset: bool, classes: Any = None) -> torch.Tensor:
        y = np.asarray(y, dtype=np.float32)
        y2d = y.reshape(-1, 1) if y.ndim == 1 else y
        if reset:
            self.n_outputs_ = int(y2d.shape[1])
        elif y2d.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y2d.shape[1]} outputs, but the model has {self.n_outputs_}")
        return torch.tensor(y2d)

    def _n_outputs(self) -> int:
        return self.n_outputs_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def partial_fit(self, X: Any, y: Any) -> FreeNetRegressor:
        """Train one epoch (and one FreeEvolve step) on ``(X, y)``, starting a model if needed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.

        Returns
        -------
        self
        """
        return self._partial_fit(X, y)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets: shape ``(n_samples,)`` for one output, else ``(n_samples, n_outputs)``."""
        outputs = self._predict_outputs(X).numpy()
        return outputs.ravel() if self.n_outputs_ == 1 else outputs
