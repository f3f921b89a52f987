"""What differs between uses of the training loop, as callbacks (skorch's ``callbacks``).

The loop of Algorithm 1 (:func:`freenets.training.loop.fit`) is the same for ``freenets train``,
sweeps and the scikit-learn estimators; they differ in what runs at its named points:

- :class:`Checkpoint` saves the loop's state after every epoch and when it stops mid-epoch;
- :class:`StopWhenAsked` stops training after a batch or an epoch once asked (Ctrl-C, SIGTERM);
- :class:`EarlyStopping` ends training once validation has not improved for some epochs;
- :class:`ProgressBars` draws one tqdm bar per model on stderr.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from freenets.errors import Interrupted
from freenets.training.loop import Callback, Loop
from freenets.training.records import EpochRecord
from freenets.training.state import FitState

__all__ = ["Checkpoint", "EarlyStopping", "ProgressBars", "StopWhenAsked"]


class Checkpoint(Callback):
    """Hands the loop's :class:`FitState` to ``save`` after every epoch and before a stop.

    Parameters
    ----------
    save : callable
        Called with the state; it writes the checkpoint.
    """

    def __init__(self, save: Callable[[FitState], None]) -> None:
        self.save = save
        self._saved_at: tuple[int, int] | None = None

    def _save(self, loop: Loop) -> None:
        self.save(loop.snapshot())
        self._saved_at = (loop.epoch, loop.position)

    def on_epoch_end(self, loop: Loop, record: EpochRecord) -> None:
        """Save the state at the end of every epoch."""
        self._save(loop)

    def on_interrupt(self, loop: Loop) -> None:
        """Save the state where training stopped, unless it is saved already."""
        # Between batches of an epoch, or at its end (position back at 0); after an epoch's
        # last batch, before its end, the state is not one training can go on from.
        if loop.position < loop.n_train and self._saved_at != (loop.epoch, loop.position):
            self._save(loop)


class StopWhenAsked(Callback):
    """Raises :class:`~freenets.errors.Interrupted` once ``should_stop()`` says so.

    It asks after every batch that leaves more of its epoch to train, and after every epoch but
    the last, so a stop always leaves something to resume.

    Parameters
    ----------
    should_stop : callable
        Returns True to stop, such as :class:`~freenets.training.interrupt.StopOnInterrupt`.
    """

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def on_batch_end(self, loop: Loop) -> None:
        """Stop in the middle of an epoch."""
        if loop.position < loop.n_train and self.should_stop():
            raise Interrupted(f"{loop.name} stopped in epoch {loop.epoch + 1}")

    def on_epoch_end(self, loop: Loop, record: EpochRecord) -> None:
        """Stop between epochs."""
        if loop.epoch < loop.config.optim.epochs and self.should_stop():
            raise Interrupted(f"{loop.name} stopped after epoch {loop.epoch}")


class EarlyStopping(Callback):
    """Ends training once its criterion has stopped improving, as scikit-learn's MLP does.

    scikit-learn's rule (``MLPClassifier``'s ``_update_no_improvement_count``): an epoch counts
    as no improvement when the training loss is above the best loss so far minus ``tol``
    (``monitor="loss"``), or the validation score below the best score plus ``tol``
    (``monitor="validation"``); training stops once more than ``patience`` epochs in a row were
    no improvement. One difference, on purpose: while the topology rule is still changing the
    graph the count stays at zero, because a score that falls may only say that a round has just
    moved edges, not that training is over. With validation data the loop then returns the best
    epoch's model (weights and graph), as it always does.

    Parameters
    ----------
    patience : int
        ``n_iter_no_change``: epochs in a row without improvement that are tolerated.
    tol : float, default 0.0
        The improvement that counts.
    monitor : {"validation", "loss"}, default "validation"
        What must improve: the validation score (higher is better) or the training loss.
    reduce : float, optional
        Divide the step size by this instead of stopping, as scikit-learn's
        ``learning_rate="adaptive"`` does (by 5), and count again from zero; stop only once the
        step has fallen to ``min_learning_rate``. The loop multiplies its scheduled step by
        ``loop.lr_factor``, which this lowers.
    min_learning_rate : float, default 1e-6
        With ``reduce``: the step size at or below which a plateau stops training
        (scikit-learn's 1e-6).

    Attributes
    ----------
    converged_epoch : int or None
        The epoch after which the rule had converged (0 without a rule), once it has.
    stopped : bool
        Whether it ended training (else the epochs ran out).
    """

    def __init__(
        self,
        patience: int,
        *,
        tol: float = 0.0,
        monitor: str = "validation",
        reduce: float | None = None,
        min_learning_rate: float = 1e-6,
    ) -> None:
        if reduce is not None and not reduce > 1:
            raise ValueError(f"reduce must be > 1, got {reduce}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if monitor not in ("validation", "loss"):
            raise ValueError(f"monitor must be 'validation' or 'loss', got {monitor!r}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        self.patience, self.tol, self.monitor = patience, tol, monitor
        self.reduce, self.min_learning_rate = reduce, min_learning_rate
        self.converged_epoch: int | None = None
        self.best = math.inf if monitor == "loss" else -math.inf
        self.count = 0
        self.stopped = False

    def on_epoch_end(self, loop: Loop, record: EpochRecord) -> None:
        """Count this epoch as an improvement or not; set ``loop.stop`` once past ``patience``."""
        if self.monitor == "loss":
            value = record.train_loss
            improved = value <= self.best - self.tol
            self.best = min(self.best, value)
        else:
            if record.val_accuracy is None:
                raise ValueError("early stopping needs validation data")
            value = record.val_accuracy
            improved = value >= self.best + self.tol
            self.best = max(self.best, value)
        if self.converged_epoch is None and (loop.rule is None or loop.rule.converged):
            self.converged_epoch = 0 if loop.rule is None else loop.epoch
        if self.converged_epoch is None:
            self.count = 0  # the graph is still changing
            return
        self.count = 0 if improved else self.count + 1
        if self.count <= self.patience:
            return
        step = loop.config.optim.learning_rate * loop.lr_factor if self.reduce else 0.0
        if self.reduce is None or step <= self.min_learning_rate:
            loop.stop = self.stopped = True
            return
        loop.lr_factor /= self.reduce  # scikit-learn's _SGDOptimizer.trigger_stopping
        self.count = 0


class ProgressBars(Callback):
    """One tqdm bar per model over its epochs, on stderr, with loss, validation and edges.

    Parameters
    ----------
    epochs : int
        The bars' length.
    enabled : bool, default True
        Draw nothing when False.
    """

    def __init__(self, epochs: int, enabled: bool = True) -> None:
        self.epochs = epochs
        self.enabled = enabled
        self.bars: dict[str, tqdm] = {}

    def on_epoch_end(self, loop: Loop, record: EpochRecord) -> None:
        """Move the model's bar to the epoch just done."""
        if not self.enabled:
            return
        bar = self.bars.get(loop.name)
        if bar is None:
            bar = self.bars[loop.name] = tqdm(
                total=self.epochs, desc=f"{loop.name:>10}", unit="epoch"
            )
        bar.update(record.epoch - bar.n)  # a resumed run starts part way
        info: dict[str, Any] = {"loss": f"{record.train_loss:.4f}"}
        if record.val_accuracy is not None:
            info["val"] = f"{record.val_accuracy:.4f}"
        if record.edges is not None:
            info["edges"] = record.edges
        bar.set_postfix(info, refresh=False)
        if record.epoch == self.epochs:
            bar.close()

    def close(self) -> None:
        """Close every bar (training ended early, or failed)."""
        for bar in self.bars.values():
            bar.close()
