"""scikit-learn estimators that train a FreeNet with FreeEvolve (paper, Algorithm 1).

:class:`FreeNetClassifier` and :class:`FreeNetRegressor` follow scikit-learn's rules: ``__init__``
only stores its arguments, ``fit`` returns ``self``, learned attributes end in ``_``, and the
estimator checks pass (``sklearn.utils.estimator_checks``). Each epoch trains the weights with Adam
and then, until the graph has converged, takes one FreeEvolve step (:class:`~freenets.Evolver`,
which keeps pruned weights still), so the topology is learned from the data given to ``fit``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from torch import nn

from freenets.estimator_base import _FreeNetEstimator


class FreeNetClassifier(ClassifierMixin, _FreeNetEstimator):
    """A FreeNet classifier whose topology is learned with FreeEvolve, scikit-learn style.

    Parameters
    ----------
    n_neurons : int, default 16
        Number of neurons k of the FreeNet.
    epsilon : float, default 0.25
        FreeEvolve's threshold in ``(0, 1)``: edges are added where NCAM, pruned where NCIM,
        exceeds ``1 - epsilon``.
    evolve : bool, default True
        Take a FreeEvolve step after every epoch until the graph converges; False trains the
        dense FreeNet.
    max_epochs : int, default 20
        Epochs of ``fit``; ``partial_fit`` runs one epoch per call.
    batch_size : int, default 64
        Mini-batch size.
    learning_rate : float, default 0.01
        Adam's learning rate.
    patience : int, default 3
        FreeEvolve steps without change after which the graph counts as converged and is frozen.
    readd : {"restore", "zero"}, default "restore"
        A re-added edge resumes its stored weight, or starts from zero.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified), stop after
        ``n_iter_no_change`` epochs without a better validation accuracy, and keep the best epoch.
    validation_fraction : float, default 0.1
        Fraction held out when ``early_stopping``.
    n_iter_no_change : int, default 10
        Patience of early stopping, in epochs.
    random_state : int, RandomState instance or None, default None
        Seeds the initial weights and the order of the samples (through ``torch.Generator``).
    device : str, default "cpu"
        Torch device to train on; ``"auto"`` picks CUDA when available.

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
        One record per epoch: ``epoch``, ``loss``, ``edges``, ``added`` and ``pruned`` when a
        FreeEvolve step ran, ``val_score`` with early stopping.
    n_iter_ : int
        Epochs run.
    optimizer_ : torch.optim.Adam
        The optimiser, kept for ``partial_fit``.
    evolver_ : Evolver
        The FreeEvolve state (``evolver_.converged``, ``evolver_.history``).
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

    def _targets(self, y: np.ndarray, *, reset: bool, classes: Any = None) -> torch.Tensor:
        check_classification_targets(y)
        if reset:
            self.classes_ = np.unique(y if classes is None else classes)
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

    def _loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def _validation_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float((outputs.argmax(dim=1) == targets).to(torch.float64).mean())

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
    n_neurons, epsilon, evolve, max_epochs, batch_size, learning_rate, patience, readd : optional
        As for :class:`FreeNetClassifier` (defaults 16, 0.25, True, 20, 64, 0.01, 3, "restore").
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
    optimizer_ : torch.optim.Adam
        The optimiser, kept for ``partial_fit``.
    evolver_ : Evolver
        The FreeEvolve state.
    device_ : torch.device
        The device the model lives on.

    Notes
    -----
    The targets are not rescaled; standardise them (``TransformedTargetRegressor``) when their
    scale is far from 1.
    """

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

    def _loss(self) -> nn.Module:
        return nn.MSELoss()

    def _validation_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        targets = targets.to(torch.float64)
        residual = (targets - outputs).pow(2).sum(dim=0)
        spread = (targets - targets.mean(dim=0)).pow(2).sum(dim=0).clamp_min(1e-12)
        return float((1.0 - residual / spread).mean())  # R^2, averaged over the outputs

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
