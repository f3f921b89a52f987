"""What differs between uses of the training loop, as callbacks (skorch's ``callbacks``).

The loop of Algorithm 1 (:func:`freenets.training.loop.fit`) is the same for ``freenets train``,
sweeps and the scikit-learn estimators; they differ in what runs at its named points:

- :class:`Checkpoint` saves the loop's state after every epoch and when it stops mid-epoch;
- :class:`StopWhenAsked` stops training after a batch or an epoch once asked (Ctrl-C, SIGTERM);
- :class:`EarlyStopping` ends training once validation has not improved for some epochs;
- :class:`ProgressBars` draws one tqdm bar per model on stderr.
"""

from __future__ import annotations

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
        if loop.epoch < loop.config.epochs and self.should_stop():
            raise Interrupted(f"{loop.name} stopped after epoch {loop.epoch}")


class EarlyStopping(Callback):
    """Ends training once validation has not improved for ``patience`` epochs of a still graph.

    While the topology rule is still changing the graph, a validation score that falls may only
    say that a round has just moved edges, not that training is over: the patience counts from
    the later of the best epoch and the epoch after which the rule converged. The loop then
    returns the best epoch's model (weights and graph), as it always does with validation data.

    Parameters
    ----------
    patience : int
        Epochs after the best one, and after the rule's convergence, without a better
        validation score.

    Attributes
    ----------
    converged_epoch : int or None
        The epoch after which the rule had converged (0 without a rule), once it has.
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience = patience
        self.converged_epoch: int | None = None

    def on_epoch_end(self, loop: Loop, record: EpochRecord) -> None:
        """Set ``loop.stop`` once the best epoch and the rule's convergence are ``patience`` behind."""
        if record.val_accuracy is None:
            raise ValueError("early stopping needs validation data")
        if self.converged_epoch is None and (loop.rule is None or loop.rule.converged):
            self.converged_epoch = 0 if loop.rule is None else loop.epoch
        if self.converged_epoch is None:
            return  # the graph is still changing
        if loop.epoch - max(loop.best[1], self.converged_epoch) >= self.patience:
            loop.stop = True


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
