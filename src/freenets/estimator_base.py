"""The training the scikit-learn estimators of :mod:`freenets.estimator` share (paper, Algorithm 1).

:class:`_FreeNetEstimator` checks the parameters and data, builds the FreeNet, and trains it epoch
by epoch with Adam, taking one FreeEvolve step (:class:`~freenets.Evolver`) after each epoch until
the graph converges; the classifier and the regressor only say how targets, loss and validation
score look.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.func import functional_call

from freenets.model import FreeNet
from freenets.training.evolver import Evolver
from freenets.training.optim import adam

_PREDICT_BATCH = 4096


def _device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; anything else goes to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'auto' or a torch device, got {name!r}"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asks for CUDA, which is not available here")
    return device


class _FreeNetEstimator(BaseEstimator):
    """Shared training loop of :class:`FreeNetClassifier` and :class:`FreeNetRegressor`."""

    def __init__(
        self,
        n_neurons: int = 16,
        *,
        epsilon: float = 0.25,
        evolve: bool = True,
        max_epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-2,
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
        self.evolve = evolve
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
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

    def _loss(self) -> nn.Module:
        raise NotImplementedError

    def _validation_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------------ checks and set-up

    def _check_params(self) -> None:
        """Raise ``ValueError`` naming the first parameter out of range (checked in ``fit``)."""
        for name in ("n_neurons", "max_epochs", "batch_size", "patience", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("epsilon", "validation_fraction"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
        rate = self.learning_rate
        if not isinstance(rate, numbers.Real) or not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {rate!r}")
        if self.readd not in ("restore", "zero"):
            raise ValueError(f"readd must be 'restore' or 'zero', got {self.readd!r}")

    def _training_data(self, X: Any, y: Any, *, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Validated float32 inputs and raw targets, with scikit-learn's error messages."""
        numeric = isinstance(self, RegressorMixin)
        return validate_data(
            self, X, y, reset=reset, dtype=np.float32, multi_output=numeric, y_numeric=numeric
        )

    def _initialise(self) -> None:
        """A fresh FreeNet, optimiser and Evolver; randomness from ``random_state`` only."""
        self._check_params()
        self.device_ = _device(self.device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        # Independent streams for the initial weights and for the order of the samples.
        init = torch.Generator().manual_seed(seed)
        self._shuffle = torch.Generator().manual_seed(seed + 7919)
        self._seed = seed
        self.model_ = FreeNet(
            self.n_features_in_, self.n_neurons, self._n_outputs(), generator=init
        )
        self.model_.to(self.device_)
        self.optimizer_ = adam([{"params": list(self.model_.parameters())}], self.learning_rate)
        self.evolver_ = Evolver(
            self.model_,
            self.epsilon,
            optimizer=self.optimizer_,
            readd=self.readd,  # type: ignore[arg-type]
            patience=self.patience,
        )
        self.history_: list[dict[str, Any]] = []
        self.n_iter_ = 0

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32, device=self.device_)

    # ------------------------------------------------------------------ training

    def _epoch(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """One pass over the data, then one FreeEvolve step unless the graph has converged."""
        model, loss_fn = self.model_, self._loss()
        model.train()
        order = torch.randperm(x.shape[0], generator=self._shuffle).to(self.device_)
        total = 0.0
        for start in range(0, x.shape[0], self.batch_size):
            index = order[start : start + self.batch_size]
            loss = loss_fn(model(x[index]), y[index])
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            total += float(loss.detach()) * index.numel()
        loss = total / x.shape[0]
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss}; lower learning_rate or scale the inputs"
            )
        self.n_iter_ += 1
        record: dict[str, Any] = {"epoch": self.n_iter_, "loss": loss}
        if self.evolve and not self.evolver_.converged:
            step = self.evolver_.step(x)
            record.update(added=step.added, pruned=step.pruned)
        record["edges"] = model.n_edges
        self.history_.append(record)
        return record

    def fit(self, X: Any, y: Any) -> _FreeNetEstimator:
        """Train a fresh FreeNet on ``(X, y)`` for up to ``max_epochs`` epochs.

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
        """
        X, y = self._training_data(X, y, reset=True)
        targets = self._targets(y, reset=True)
        self._initialise()
        x, targets = self._tensor(X), targets.to(self.device_)
        if not self.early_stopping:
            for _ in range(self.max_epochs):
                self._epoch(x, targets)
            return self
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
        best_score, best_state, since_best = -math.inf, None, 0
        for _ in range(self.max_epochs):
            record = self._epoch(x[train], targets[train])
            record["val_score"] = self._validation_score(self._outputs(x[val]), targets[val])
            if record["val_score"] > best_score:
                best_score, since_best = record["val_score"], 0
                best_state = copy.deepcopy(self.model_.state_dict())
            else:
                since_best += 1
                if since_best >= self.n_iter_no_change:
                    break
        if best_state is not None:
            self.model_.load_state_dict(best_state)
        return self

    def _partial_fit(self, X: Any, y: Any, classes: Any = None) -> _FreeNetEstimator:
        first = not hasattr(self, "model_")
        X, y = self._training_data(X, y, reset=first)
        targets = self._targets(y, reset=first, classes=classes)
        if first:
            self._initialise()
        self._epoch(self._tensor(X), targets.to(self.device_))
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
