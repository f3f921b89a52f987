"""Topology rules as a PyTorch Lightning callback (paper, Algorithm 1 around any rule).

Algorithm 1 alternates training the weights of the graph with a change of the graph (FreeEvolve,
Algorithm 2, or any other rule) until the graph stops changing. Under a Lightning ``Trainer`` the
``Trainer`` trains the weights; :class:`TopologyCallback` changes the graph by its rule, and
:class:`FreeEvolveCallback`, its FreeEvolve case, changes the graph of every :class:`~freenets.FreeNet` in the
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

import copy
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as error:  # an optional dependency: say how to get it, in one line
    raise ImportError(
        "freenets.lightning needs the lightning package: pip install 'freenets[lightning]'"
    ) from error

from freenets.model import FreeNet
from freenets.rules import make_rule
from freenets.rules.base import Readd, TopologyChange, TopologyRule
from freenets.rules.freeevolve import FreeEvolveRule
from freenets.stats import Data
from freenets.training.evolver import Evolver

__all__ = ["FreeEvolveCallback", "TopologyCallback"]


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
            f"{len(holders)} optimisers train the same FreeNet weight; a topology callback "
            "needs exactly one"
        )
    return holders[0] if holders else None


class TopologyCallback(pl.Callback):
    """Algorithm 1 in a Lightning ``Trainer``: a topology rule on every FreeNet, every few epochs.

    At the end of every ``every_n_epochs``-th training epoch but the last, once Lightning has
    validated it, each :class:`~freenets.FreeNet` in the ``LightningModule`` takes one round of
    its own copy of ``rule`` on ``data``, exactly as :meth:`freenets.Evolver.step` does, with the
    optimiser state of edges that leave or return zeroed in the optimiser of
    ``trainer.optimizers`` that trains the FreeNet's weight. A rule with an initial graph (SET,
    RigL) sets it when fitting starts; a rule's ``after_batch`` runs after every optimiser step.
    Once a rule has converged its graph is left as it is; training goes on.

    Each round logs ``edges``, ``added`` and ``pruned`` through ``pl_module.log`` (``NAME/edges``
    and so on, with ``NAME`` the submodule's name, when the module holds several FreeNets).

    Parameters
    ----------
    rule : TopologyRule or str
        The rule (a registered one, or your own subclass; each FreeNet gets a copy), or a name
        of :data:`freenets.rules.RULES` built with its defaults. A rule that changes the graph
        in place of optimiser steps (RigL) is refused: a callback cannot skip Lightning's step.
    data : torch.Tensor or iterable
        The training inputs of a round (FreeEvolve's statistics pass): a tensor, or a
        ``DataLoader`` (or list) of batches, each a tensor or an ``(x, y)`` pair. Not an
        iterator, which one round uses up.
    every_n_epochs : int, default 1
        Epochs per round: the graph changes after epochs ``n``, ``2n``, ... (from 1).
    seed : int, default 0
        Seeds the rules' randomness (SET's choices).

    Attributes
    ----------
    evolvers : dict of str to Evolver
        One :class:`~freenets.Evolver` per FreeNet, by submodule name (built when fitting starts).
    history : list of TopologyChange
        One record per FreeNet per round (``module`` names the FreeNet, ``epoch`` the epoch the
        round ended, from 1), saved in checkpoints.

    Raises
    ------
    ValueError
        For a bad argument; when fitting starts, for a module without a FreeNet, or an optimiser
        that applies weight decay to a FreeNet's weight (it would move pruned weights). One
        callback changes every FreeNet of the module; Lightning refuses a second one.

    Notes
    -----
    Under data-parallel training every process computes the same graph from the same ``data``
    and the same (synchronised) weights, so pass every process the same ``data``. Strategies that
    shard or flatten parameters (FSDP, DeepSpeed) are not supported.

    Examples
    --------
    >>> callback = TopologyCallback(SETRule(density=0.3), x_train)
    >>> trainer = lightning.pytorch.Trainer(max_epochs=20, callbacks=[callback])
    >>> trainer.fit(module, train_loader)  # module holds a freenets.FreeNet
    """

    def __init__(
        self,
        rule: TopologyRule | str,
        data: Data,
        every_n_epochs: int = 1,
        *,
        seed: int = 0,
    ) -> None:
        if isinstance(rule, str):
            rule = make_rule(rule)
        if not isinstance(rule, TopologyRule):
            raise ValueError(f"rule must be a TopologyRule or a rule's name, got {rule!r}")
        if type(rule).instead_of_step is not TopologyRule.instead_of_step:
            raise ValueError(
                f"rule {rule.name!r} changes the graph in place of optimiser steps, which a "
                "Lightning callback cannot skip; train it with freenets.training.loop.fit or "
                "an Evolver"
            )
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int):
            raise ValueError(f"every_n_epochs must be an integer, got {every_n_epochs!r}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        _check_data(data)
        self.rule = rule
        self.data = data
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.evolvers: dict[str, Evolver] = {}
        self.history: list[TopologyChange] = []
        # A checkpoint's state can arrive before fitting starts (and the evolvers exist).
        self._pending: dict[str, Any] | None = None

    @property
    def converged(self) -> bool:
        """True once every FreeNet's rule has converged (False before fitting starts)."""
        return bool(self.evolvers) and all(e.converged for e in self.evolvers.values())

    def _evolver(self, net: FreeNet, optimizer: torch.optim.Optimizer | None) -> Evolver:
        generator = torch.Generator().manual_seed(self.seed)
        return Evolver(net, copy.deepcopy(self.rule), optimizer, generator=generator)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Find the FreeNets and the optimisers that train them (both exist from here on)."""
        nets = _freenets(pl_module)
        if not nets:
            raise ValueError(
                f"{type(pl_module).__name__} holds no freenets.FreeNet for "
                f"{type(self).__name__} to change"
            )
        evolvers = {}
        for name, net in nets.items():
            evolver = self._evolver(net, _optimizer_of(net, trainer.optimizers))
            if name in self.evolvers:  # a second fit with the same callback goes on counting
                evolver.rule.load_state_dict(self.evolvers[name].rule.state_dict())
                evolver.generator.set_state(self.evolvers[name].generator.get_state())
            elif self._pending is None and trainer.current_epoch == 0:
                evolver.start()  # the rule's initial graph (SET, RigL), before any step
            evolvers[name] = evolver
        self.evolvers = evolvers
        if self._pending is not None:
            state, self._pending = self._pending, None
            self._restore(state)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """A rule's change after an optimiser step, for the rules that have one."""
        if type(self.rule).after_batch is TopologyRule.after_batch:
            return  # most rules: nothing to ask
        inputs, targets = batch
        for evolver in self.evolvers.values():
            evolver.steps += 1
            evolver.after_step(inputs, targets, _no_loss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One round per FreeNet at the end of every ``every_n_epochs``-th epoch but the last.

        Lightning validates an epoch before this hook, so the epoch is scored on the graph it
        trained; after the last epoch (``max_epochs``) the graph is left as it was scored.
        """
        epoch = trainer.current_epoch + 1  # the epoch just ended, from 1 as the loop counts
        if epoch % self.every_n_epochs:
            return
        last = trainer.max_epochs
        if last is not None and last >= 0 and epoch >= last:
            return
        several = len(self.evolvers) > 1
        for name, evolver in self.evolvers.items():
            # The Figure 7 values are left out (value_limit=0): the records stay small.
            record = evolver.step(self.data, value_limit=0, epoch=epoch)
            record.module = name
            self.history.append(record)
            prefix = f"{name}/" if several else ""
            for key in ("edges", "added", "pruned"):
                pl_module.log(
                    prefix + key, float(getattr(record, key)), on_step=False, on_epoch=True
                )

    def state_dict(self) -> dict[str, Any]:
        """Each FreeNet's rule state and generator, and the round records (plain values)."""
        if self._pending is not None:  # restored but not yet fitted: hand the state on as it is
            return self._pending
        return {
            "rules": {name: e.rule.state_dict() for name, e in self.evolvers.items()},
            "generators": {name: e.generator.get_state() for name, e in self.evolvers.items()},
            "history": [asdict(record) for record in self.history],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; ``ValueError`` if it is not such a state."""
        if isinstance(state_dict, dict) and set(state_dict) == {"rules", "history"}:
            state_dict = _earlier_state(state_dict)
        if (
            not isinstance(state_dict, dict)
            or set(state_dict) != {"rules", "generators", "history"}
            or not isinstance(state_dict["rules"], dict)
            or not isinstance(state_dict["generators"], dict)
            or not isinstance(state_dict["history"], list)
        ):
            raise ValueError(f"the checkpoint holds no {type(self).__name__} state of this version")
        if self.evolvers:
            self._restore(state_dict)
        else:
            self._pending = state_dict

    def _restore(self, state: dict[str, Any]) -> None:
        """Load a checked state into the evolvers, which must be for the same FreeNets."""
        if set(state["rules"]) != set(self.evolvers):
            raise ValueError(
                f"the checkpoint's rule state is for the FreeNets {sorted(state['rules'])}, "
                f"but the module holds {sorted(self.evolvers)}"
            )
        for name, rule_state in state["rules"].items():
            self.evolvers[name].rule.load_state_dict(rule_state)
            generator = state["generators"].get(name)
            if isinstance(generator, torch.Tensor):
                self.evolvers[name].generator.set_state(generator)
        try:
            self.history = [TopologyChange(**record) for record in state["history"]]
        except TypeError as error:
            raise ValueError(f"the checkpoint's round records are damaged: {error}") from None
        for name, evolver in self.evolvers.items():  # each goes on numbering its own rounds
            evolver.history = [record for record in self.history if record.module == name]


def _earlier_state(state: dict[str, Any]) -> dict[str, Any]:
    """A state FreeEvolveCallback saved before rules other than FreeEvolve existed, as today's.

    FreeEvolve draws no random numbers, so it saved no generators; its round records counted
    epochs from 0 (Lightning's ``current_epoch``), today's from 1, as the training loop does.
    """
    history = state["history"]
    if isinstance(history, list) and all(
        isinstance(record, dict) and isinstance(record.get("epoch"), int) for record in history
    ):
        history = [{**record, "epoch": record["epoch"] + 1} for record in history]
    return {"rules": state["rules"], "generators": {}, "history": history}


def _no_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    raise ValueError("a rule run by TopologyCallback cannot ask for the training loss")


class FreeEvolveCallback(TopologyCallback):
    """Algorithm 1 in a Lightning ``Trainer``: FreeEvolve on every FreeNet every few epochs.

    :class:`TopologyCallback` with :class:`~freenets.rules.freeevolve.FreeEvolveRule`: at the
    end of every ``every_n_epochs``-th training epoch but the last, each FreeNet takes one
    FreeEvolve step (Algorithm 2) on ``data``; once its graph has not changed for ``patience``
    consecutive rounds it has converged and is left as it is.

    Parameters
    ----------
    data : torch.Tensor or iterable
        The training inputs of the statistics pass (see :class:`TopologyCallback`).
    epsilon : float, default 0.25
        FreeEvolve's threshold parameter in ``(0, 1)``.
    every_n_epochs : int, default 1
        Epochs per round.
    patience : int, default 3
        Rounds without change after which a graph counts as converged.
    readd : {"restore", "zero"}, default "restore"
        A re-added edge resumes its stored weight, or starts from zero.
    batch_size : int, default 1024
        Batch size of the statistics pass when ``data`` is a tensor.

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
        rule = FreeEvolveRule(epsilon, patience=patience, readd=readd, batch_size=batch_size)
        super().__init__(rule, data, every_n_epochs)
        self.epsilon = epsilon
        self.patience = patience
        self.readd: Readd = readd
        self.batch_size = batch_size
