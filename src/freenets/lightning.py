"""FreeEvolve as a PyTorch Lightning callback (paper, Algorithm 1 around Algorithm 2).

Algorithm 1 alternates training the weights of the graph with FreeEvolve's change of the graph
(Algorithm 2) until the graph stops changing. Under a Lightning ``Trainer`` the ``Trainer`` trains
the weights; :class:`FreeEvolveCallback` changes the graph of every :class:`~freenets.FreeNet` in the
``LightningModule`` at the end of every ``every_n_epochs``-th training epoch but the last (after
Lightning has validated it, so the epoch is scored on the graph it trained). It does so through the
same code as :class:`freenets.Evolver`, one per FreeNet:
:class:`~freenets.rules.freeevolve.FreeEvolveRule` proposes the graph from NCAM and NCIM over
``data``, and :func:`~freenets.training.topology.apply_mask` writes it into the model and zeroes the
state, in the optimiser Lightning built, of every edge that leaves or returns, so that a pruned
weight does not move.

The graph is the model's ``mask`` buffer, saved in every Lightning checkpoint with the weights; the
callback's own state (each FreeNet's count of unchanged rounds, and the round records) is saved
beside it, so that ``Trainer.fit(ckpt_path=...)`` goes on exactly as an uninterrupted run would.

This module needs the optional ``lightning`` package (``pip install 'freenets[lightning]'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch

try:
    import lightning.pytorch as pl
except ImportError as error:  # an optional dependency: say how to get it, in one line
    raise ImportError(
        "freenets.lightning needs the lightning package: pip install 'freenets[lightning]'"
    ) from error

from freenets.model import FreeNet
from freenets.rules.base import Readd
from freenets.rules.freeevolve import FreeEvolveRule
from freenets.stats import Data
from freenets.training.evolver import Evolver

__all__ = ["FreeEvolveCallback", "RoundRecord"]


@dataclass(frozen=True)
class RoundRecord:
    """What one round of :class:`FreeEvolveCallback` did to one FreeNet's graph.

    Attributes
    ----------
    epoch : int
        The training epoch (Lightning's ``current_epoch``, from 0) at whose end the round ran.
    module : str
        The FreeNet's name in the ``LightningModule`` (as ``named_modules`` gives it).
    edges, added, pruned : int
        Edges after the round, edges it added and edges it pruned (0 and 0 once converged).
    """

    epoch: int
    module: str
    edges: int
    added: int
    pruned: int


def _check_data(data: Data) -> None:
    """Refuse statistics data that cannot be read once per round."""
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise ValueError("data must hold at least one sample")
        return
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise ValueError(
            f"data must be a tensor of inputs or an iterable of batches, got {type(data).__name__}"
        )
    if isinstance(data, Iterator):
        # A generator is used up by the first round; every later round would see no samples.
        raise ValueError(
            "data is an iterator, which one round would use up; pass a tensor, a DataLoader "
            "or a list of batches"
        )


def _freenets(module: torch.nn.Module) -> dict[str, FreeNet]:
    """The FreeNet submodules of ``module`` by name, each once (a shared one under its first name)."""
    found: dict[str, FreeNet] = {}
    for name, submodule in module.named_modules():
        if isinstance(submodule, FreeNet):
            found[name] = submodule
    return found


def _optimizer_of(
    model: FreeNet, optimizers: Iterable[torch.optim.Optimizer]
) -> torch.optim.Optimizer | None:
    """The one optimiser that trains ``model.weight``, or ``None`` if none does (a frozen graph)."""
    holders = [
        optimizer
        for optimizer in optimizers
        if any(p is model.weight for group in optimizer.param_groups for p in group["params"])
    ]
    if len(holders) > 1:
        # apply_mask zeroes one optimiser's state; a second would keep moving pruned weights.
        raise ValueError(
            f"{len(holders)} optimisers train the same FreeNet weight; FreeEvolveCallback "
            "needs exactly one"
        )
    return holders[0] if holders else None


class FreeEvolveCallback(pl.Callback):
    """Algorithm 1 in a Lightning ``Trainer``: FreeEvolve on every FreeNet every few epochs.

    At the end of every ``every_n_epochs``-th training epoch each :class:`~freenets.FreeNet` in the
    ``LightningModule`` takes one FreeEvolve step (Algorithm 2) on ``data``, exactly as
    :meth:`freenets.Evolver.step` does, with the optimiser state of edges that leave or return
    zeroed in the optimiser of ``trainer.optimizers`` that trains the FreeNet's weight. Once a
    FreeNet's graph has not changed for ``patience`` consecutive rounds it has converged and is
    left as it is; training goes on (stop it with ``max_epochs`` or ``EarlyStopping``).

    Each round logs ``edges``, ``added`` and ``pruned`` through ``pl_module.log`` (``NAME/edges``
    and so on, with ``NAME`` the submodule's name, when the module holds several FreeNets).

    Parameters
    ----------
    data : torch.Tensor or iterable
        The training inputs of the statistics pass: a tensor, or a ``DataLoader`` (or list) of
        batches, each a tensor or an ``(x, y)`` pair. Not an iterator, which one round uses up.
    epsilon : float, default 0.25
        FreeEvolve's threshold parameter in ``(0, 1)``.
    every_n_epochs : int, default 1
        Epochs per round: the graph changes after epochs ``n - 1``, ``2n - 1``, ... (from 0).
    patience : int, default 3
        Rounds without change after which a graph counts as converged.
    readd : {"restore", "zero"}, default "restore"
        A re-added edge resumes its stored weight, or starts from zero.
    batch_size : int, default 1024
        Batch size of the statistics pass when ``data`` is a tensor.

    Attributes
    ----------
    evolvers : dict of str to Evolver
        One :class:`~freenets.Evolver` per FreeNet, by submodule name (built when fitting starts).
    history : list of RoundRecord
        One record per FreeNet per round, saved in checkpoints.

    Raises
    ------
    ValueError
        For a bad argument; when fitting starts, for a module without a FreeNet, or an optimiser
        that applies weight decay to a FreeNet's weight (it would move pruned weights). One
        callback evolves every FreeNet of the module; Lightning refuses a second one.

    Notes
    -----
    Under data-parallel training every process computes the same graph from the same ``data``
    and the same (synchronised) weights, so pass every process the same ``data``. Strategies that
    shard or flatten parameters (FSDP, DeepSpeed) are not supported.

    Examples
    --------
    >>> callback = FreeEvolveCallback(x_train, epsilon=0.25, patience=3)
    >>> trainer = lightning.pytorch.Trainer(max_epochs=20, callbacks=[callback])
    >>> trainer.fit(module, train_loader)  # module holds a freenets.FreeNet
    """

    def __init__(
        self,
        data: Data,
        epsilon: float = 0.25,
        every_n_epochs: int = 1,
        patience: int = 3,
        readd: Readd = "restore",
        *,
        batch_size: int = 1024,
    ) -> None:
        # The rule checks epsilon, patience, readd and batch_size: build one now so that a bad
        # argument fails here, not at the end of the first epoch.
        FreeEvolveRule(epsilon, patience=patience, readd=readd, batch_size=batch_size)
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int):
            raise ValueError(f"every_n_epochs must be an integer, got {every_n_epochs!r}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        _check_data(data)
        self.data = data
        self.epsilon = epsilon
        self.every_n_epochs = every_n_epochs
        self.patience = patience
        self.readd: Readd = readd
        self.batch_size = batch_size
        self.evolvers: dict[str, Evolver] = {}
        self.history: list[RoundRecord] = []
        # A checkpoint's state can arrive before fitting starts (and the evolvers exist).
        self._pending: dict[str, Any] | None = None

    @property
    def converged(self) -> bool:
        """True once every FreeNet's graph has converged (False before fitting starts)."""
        return bool(self.evolvers) and all(e.converged for e in self.evolvers.values())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Find the FreeNets and the optimisers that train them (both exist from here on)."""
        nets = _freenets(pl_module)
        if not nets:
            raise ValueError(
                f"{type(pl_module).__name__} holds no freenets.FreeNet for FreeEvolveCallback "
                "to evolve"
            )
        evolvers = {}
        for name, net in nets.items():
            evolver = Evolver(
                net,
                self.epsilon,
                optimizer=_optimizer_of(net, trainer.optimizers),
                readd=self.readd,
                patience=self.patience,
                batch_size=self.batch_size,
            )
            if name in self.evolvers:  # a second fit with the same callback goes on counting
                evolver.rule.load_state_dict(self.evolvers[name].rule.state_dict())
            evolvers[name] = evolver
        self.evolvers = evolvers
        if self._pending is not None:
            state, self._pending = self._pending, None
            self._restore(state)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One FreeEvolve round per FreeNet at the end of every ``every_n_epochs``-th epoch.

        Lightning validates an epoch before this hook, so the epoch is scored on the graph it
        trained; after the last epoch (``max_epochs``) the graph is left as it was scored.
        """
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        last = trainer.max_epochs
        if last is not None and last >= 0 and epoch + 1 >= last:
            return
        several = len(self.evolvers) > 1
        for name, evolver in self.evolvers.items():
            if evolver.converged:
                edges = cast(FreeNet, evolver.model).n_edges
                record = RoundRecord(epoch, name, edges, 0, 0)
            else:
                # The Figure 7 values are left out (value_limit=0): the records stay small.
                step = evolver.step(self.data, value_limit=0)
                record = RoundRecord(epoch, name, step.edges, step.added, step.pruned)
            self.history.append(record)
            prefix = f"{name}/" if several else ""
            for key in ("edges", "added", "pruned"):
                pl_module.log(
                    prefix + key, float(getattr(record, key)), on_step=False, on_epoch=True
                )

    def state_dict(self) -> dict[str, Any]:
        """Each FreeNet's count of unchanged rounds, and the round records (plain values)."""
        if self._pending is not None:  # restored but not yet fitted: hand the state on as it is
            return self._pending
        return {
            "rules": {name: e.rule.state_dict() for name, e in self.evolvers.items()},
            "history": [asdict(record) for record in self.history],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; ``ValueError`` if it is not such a state."""
        if (
            not isinstance(state_dict, dict)
            or set(state_dict) != {"rules", "history"}
            or not isinstance(state_dict["rules"], dict)
            or not isinstance(state_dict["history"], list)
        ):
            raise ValueError("the checkpoint holds no FreeEvolveCallback state of this version")
        if self.evolvers:
            self._restore(state_dict)
        else:
            self._pending = state_dict

    def _restore(self, state: dict[str, Any]) -> None:
        """Load a checked state into the evolvers, which must be for the same FreeNets."""
        if set(state["rules"]) != set(self.evolvers):
            raise ValueError(
                f"the checkpoint's FreeEvolve state is for the FreeNets {sorted(state['rules'])}, "
                f"but the module holds {sorted(self.evolvers)}"
            )
        for name, rule_state in state["rules"].items():
            self.evolvers[name].rule.load_state_dict(rule_state)
        try:
            self.history = [RoundRecord(**record) for record in state["history"]]
        except TypeError as error:
            raise ValueError(
                f"the checkpoint's FreeEvolve round records are damaged: {error}"
            ) from None
