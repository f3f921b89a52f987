"""The optimiser of the training loop (paper, section 5, "Model and Training setup"): Adam, its
step size over the epochs, and loading its state and the model's from a checkpoint, checked so
that a resumed step cannot fail half way.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.optim.adam import adam as adam_step

from freenets import graph
from freenets.model import FreeNet
from freenets.training.config import TrainConfig

__all__ = [
    "EdgeAdam",
    "adam",
    "default_optimizer",
    "learning_rate",
    "load_optimizer",
    "load_weights",
]


class EdgeAdam(torch.optim.Adam):
    """Adam that keeps a sparse-gradient parameter's moments only where its gradients are.

    A FreeNet built with ``sparse_grad=True`` gets its weight's gradient as a sparse tensor
    holding every active edge (zeros included): here that weight's moments are vectors over
    those edges (state ``index``: their flat positions, sorted), so neither its gradient nor
    its state is ever ``(k, k)``. When the graph changes, an edge that stays keeps its moments,
    one that arrives starts from zero and one that leaves is dropped. That is what dense Adam
    does under :func:`~freenets.training.topology.apply_mask`, which zeroes the moments of every
    edge that leaves or returns (a pruned edge, with zero gradient and zero moments, does not
    move), so the two train alike, to rounding. Parameters with dense gradients take
    ``torch.optim.Adam``'s own step (fused, if asked), exactly as they would there.

    Parameters
    ----------
    params, lr, betas, eps, weight_decay, fused
        As ``torch.optim.Adam`` takes them (no ``amsgrad``); a group holding a parameter with a
        sparse gradient must have no ``weight_decay``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused
        )
        self._checked: dict[torch.Tensor, tuple[torch.Tensor, int, torch.Tensor, int]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_checked", {})  # not pickled: rebuilt by the next step

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Adam step for every parameter with a gradient; ``closure`` as torch's take it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse = [
            (group, p)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None and p.grad.is_sparse
        ]
        grads = [p.grad for _, p in sparse]
        for _, p in sparse:  # torch's Adam refuses them: it steps the dense ones alone
            p.grad = None
        try:
            super().step()
        finally:
            for (_, p), grad in zip(sparse, grads, strict=True):
                p.grad = grad
        for group, p in sparse:
            self._sparse_update(p, p.grad, group)
        return loss

    def _sparse_update(
        self, parameter: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]
    ) -> None:
        """torch's Adam step, as the group asks for it (fused, foreach or single-tensor), on the
        entries that ``grad`` lists."""
        if group["weight_decay"]:
            raise ValueError("EdgeAdam applies no weight_decay to a sparse gradient")
        beta1, beta2 = group["betas"]
        state = self.state[parameter]
        if "step" not in state:  # as torch's Adam makes it, for its step functions
            on_device = group["fused"] or group["capturable"]
            dtype = torch.float32 if group["fused"] else torch.get_default_dtype()
            device = parameter.device if on_device else torch.device("cpu")
            state["step"] = torch.zeros((), dtype=dtype, device=device)
        # A FreeNet's gradient lists its edges sorted and once each, but autograd drops the
        # tensor's coalesced flag: the same positions as the moments' need no sort.
        if "index" in state and self._known_positions(parameter, grad._indices(), state["index"]):
            values = grad._values()
        else:
            grad = grad.coalesce()
            strides = torch.tensor(parameter.stride(), device=grad.device)
            index = (grad.indices() * strides[:, None]).sum(0)
            values = grad.values()
            self._follow(state, index, values)
        # Without weight decay, Adam's step does not depend on the weight: torch's own step
        # (fused, foreach or single-tensor, as the group asks) on a vector of zeros gives the
        # edges' steps in one vectorised pass, then added to their entries in one compiled pass
        # (against torch's passes one operation at a time and index_add_: 5.6 against 10.8 ms
        # at 500,000 edges of k = 10,000, 0.64 against 0.83 at 50,000 of k = 1000, quiet
        # 2-core machine, interleaved), split between threads from 125,000 edges.
        index = state["index"]
        flat = parameter.detach().view(-1)
        steps = torch.zeros_like(values)
        adam_step(
            [steps], [values], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
            foreach=group["foreach"], fused=group["fused"],
            capturable=group["capturable"], differentiable=group["differentiable"],
            amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
            eps=group["eps"], maximize=group["maximize"],
        )  # fmt: skip
        if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
            from freenets.kernels import cpu  # numba: imported on the first such step

            cpu.add_at(flat, index, steps)
        else:
            flat.index_add_(0, index, steps)

    def _known_positions(
        self, parameter: torch.Tensor, indices: torch.Tensor, index: torch.Tensor
    ) -> bool:
        """:meth:`_same_positions`, checked once for a gradient that brings the same indices
        tensor every step.

        A FreeNet's sparse gradient carries its graph's cached edge list, the same tensor while
        the graph stays: once found equal to ``index``, that tensor (same memory, shape, strides
        and version) is known to be, while ``index`` is the same tensor at the same version. The
        check reads every position: skipping it took the edges' step from 0.31 to 0.25 ms at
        50,000 edges of k = 1000, and from 4.1 to 3.7 ms at 500,000 of k = 10,000 (2-core
        machine, interleaved). The pair checked is kept referenced, so that its memory cannot
        pass to another tensor.
        """
        seen = self._checked.get(parameter)
        if (
            seen is not None
            and seen[0] is index
            and seen[1] == index._version
            and seen[2].data_ptr() == indices.data_ptr()
            and seen[2].shape == indices.shape
            and seen[2].stride() == indices.stride()
            and seen[2].device == indices.device
            and seen[3] == indices._version
        ):
            return True
        if not self._same_positions(indices, parameter, index):
            self._checked.pop(parameter, None)
            return False
        self._checked[parameter] = (index, index._version, indices, indices._version)
        return True

    @staticmethod
    def _same_positions(
        indices: torch.Tensor, parameter: torch.Tensor, index: torch.Tensor
    ) -> bool:
        """True when a sparse gradient's ``(2, n)`` indices are the flat positions ``index``."""
        row, column = parameter.stride()
        if indices.device.type == "cpu" and index.device.type == "cpu":
            from freenets.kernels import loops  # numba: imported on the first such step

            return bool(loops.same_flat_index(indices.numpy(), row, column, index.numpy()))
        flat = indices[0] * row + indices[1] * column
        return bool(torch.equal(index, flat))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, keeping each ``index`` as the integers it is (torch casts
        every state tensor but ``step`` to its parameter's dtype)."""
        saved = state_dict.get("state", {})
        groups = state_dict.get("param_groups", [])
        ids = [i for group in groups if isinstance(group, dict) for i in group.get("params", [])]
        params = [p for group in self.param_groups for p in group["params"]]
        indices = {
            params[n]: entry["index"].clone()
            for n, i in enumerate(ids[: len(params)])
            if isinstance(entry := saved.get(i), dict)
            and isinstance(entry.get("index"), torch.Tensor)
        }
        super().load_state_dict(state_dict)
        for parameter, index in indices.items():
            self.state[parameter]["index"] = index.to(parameter.device)

    @staticmethod
    def _follow(state: dict[str, Any], index: torch.Tensor, values: torch.Tensor) -> None:
        """Move the moments onto the entries ``index`` names: kept where they were, else 0."""
        old = state.get("index")
        moments = {name: torch.zeros_like(values) for name in ("exp_avg", "exp_avg_sq")}
        if old is not None and old.numel() and index.numel():
            at = torch.searchsorted(old, index).clamp_(max=old.numel() - 1)
            kept = old[at] == index
            for name, moment in moments.items():
                moment[kept] = state[name][at[kept]]
        state.update(index=index.clone(), **moments)


def default_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; a FreeNet's ``weight`` gets no decoupled decay (its L2 is masked, in the loss).

    A FreeNet with a sparse gradient (``sparse_grad=True``) gets :class:`EdgeAdam`, which keeps
    its weight's moments on the active edges only.
    """
    if isinstance(model, FreeNet):
        others = [p for name, p in model.named_parameters() if name != "weight"]
        groups: list[dict[str, Any]] = [
            {"params": others, "weight_decay": config.optim.weight_decay},
            {"params": [model.weight], "weight_decay": 0.0},
        ]
        if model.sparse_grad:
            return adam(groups, config.optim.learning_rate, EdgeAdam)
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": config.optim.weight_decay}]
    return adam(groups, config.optim.learning_rate)


def adam(
    groups: list[dict[str, Any]], lr: float, kind: type[torch.optim.Adam] = torch.optim.Adam
) -> torch.optim.Adam:
    """Adam (or ``kind``, :class:`EdgeAdam`), fused into one kernel per step where this torch
    and device have it.

    The fused step does the same arithmetic in one pass instead of a dozen ``foreach`` passes; at
    the small batches of the paper's networks it is a fifth of a training step on the CPU.
    """
    devices = {p.device.type for group in groups for p in group["params"]}
    try:
        if devices <= {"cpu", "cuda"} and all(
            p.is_floating_point() for group in groups for p in group["params"]
        ):
            return kind(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # an older torch without this device's kernel
        pass
    return kind(groups, lr=lr)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The step size of ``epoch`` (from 1): constant, or cosine-decayed towards 0 at the end."""
    if config.optim.schedule == "constant":
        return config.optim.learning_rate
    return (
        config.optim.learning_rate
        * 0.5
        * (1.0 + math.cos(math.pi * (epoch - 1) / config.optim.epochs))
    )


_ADAM_STATE = {"step", "exp_avg", "exp_avg_sq"}
_SCHEDULED = {"params", "lr"}  # not settings to compare: the parameters' ids, the scheduled step


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], steps: int) -> None:
    """``load_state_dict`` for the Adam of :func:`default_optimizer`, checked so a step cannot fail.

    The settings come from the run's config, so the saved ones must be the same (the step size
    follows the schedule, and is set again at the next epoch); every moment must have its
    parameter's shape and dtype, and the step count must be ``steps``.

    Raises
    ------
    ValueError
        If the saved state does not fit ``optimizer``.
    """
    settings = [{k: v for k, v in g.items() if k not in _SCHEDULED} for g in optimizer.param_groups]
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(settings):
        raise ValueError("the optimiser's parameter groups differ")
    for group, expected in zip(groups, settings, strict=True):
        if not isinstance(group, dict):
            raise ValueError("the optimiser's settings differ from the config's")
        found = {k: v for k, v in group.items() if k not in _SCHEDULED}
        # Types too: 0 == False, but torch's fused Adam refuses an amsgrad of 0 mid-step.
        if found != expected or any(type(found[k]) is not type(v) for k, v in expected.items()):
            raise ValueError("the optimiser's settings differ from the config's")
    with warnings.catch_warnings():  # torch warns about some malformed states before failing
        warnings.simplefilter("ignore")
        optimizer.load_state_dict(saved)
    for parameter in (p for group in optimizer.param_groups for p in group["params"]):
        moments = optimizer.state.get(parameter, {})
        # EdgeAdam's moments of a sparse-gradient parameter lie on the entries ``index`` names.
        index = moments.get("index") if isinstance(moments, dict) else None
        keys = _ADAM_STATE | ({"index"} if index is not None else set())
        if not isinstance(moments, dict) or (moments and set(moments) != keys):
            raise ValueError("the optimiser's state is not Adam's")
        if index is not None and not _fits_index(index, parameter):
            raise ValueError("the optimiser's 'index' does not fit its parameter")
        shape = parameter.shape if index is None else index.shape
        for key, value in moments.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"the optimiser's {key!r} is not a tensor")
            if key == "step":
                fits = value.shape == () and value.is_floating_point() and value.item() == steps
            elif key == "index":
                continue
            else:
                fits = (value.shape, value.dtype) == (shape, parameter.dtype)
            if not fits:
                raise ValueError(f"the optimiser's {key!r} does not fit its parameter")


def _fits_index(index: Any, parameter: torch.Tensor) -> bool:
    """Whether ``index`` is EdgeAdam's: sorted distinct flat positions within ``parameter``."""
    if not isinstance(index, torch.Tensor) or index.dtype != torch.int64 or index.dim() != 1:
        return False
    if not index.numel():
        return True
    inside = int(index[0]) >= 0 and int(index[-1]) < parameter.numel()
    return inside and bool((index[1:] > index[:-1]).all())


def load_weights(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """``load_state_dict``, refusing any change of name, shape or dtype, and masks that are no DAG.

    Raises
    ------
    ValueError
        If the saved tensors do not fit ``model``, or a FreeNet's mask is not a DAG.
    """
    layout = {key: (value.shape, value.dtype) for key, value in model.state_dict().items()}
    if {key: (value.shape, value.dtype) for key, value in saved.items()} != layout:
        raise ValueError("the saved tensors' names, shapes or types differ from the model's")
    if isinstance(model, FreeNet):
        graph.check_mask(saved["mask"], model.n_neurons)
    model.load_state_dict(saved)
