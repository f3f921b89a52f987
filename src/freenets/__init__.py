"""FreeNets: layer-free neural networks whose topology is learned from data.

The public names follow the paper: :class:`FreeNet` (section 3.1), :func:`coactivation`
(NCAM and NCIM, section 3.4), :func:`free_evolve` (Algorithm 2) and :class:`Evolver`
(Algorithm 1 inside any training loop). :class:`FreeNetClassifier` and :class:`FreeNetRegressor`
wrap Algorithm 1 as scikit-learn estimators; :mod:`freenets.export` writes the learned graph
(networkx, GraphML, DOT), the MLP of a layered graph and ONNX.
"""

from freenets.export import export_onnx, to_networkx, to_sequential
from freenets.model import FreeNet
from freenets.rules.freeevolve import free_evolve
from freenets.stats import coactivation
from freenets.training.evolver import Evolver

__version__ = "0.1.0"

_LAZY = {"FreeNetClassifier": "freenets.estimator", "FreeNetRegressor": "freenets.estimator"}


def __getattr__(name: str):
    """Import the scikit-learn estimators on first use, so ``import freenets`` stays quick."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'freenets' has no attribute {name!r}")


__all__ = [
    "Evolver",
    "FreeNet",
    "FreeNetClassifier",
    "FreeNetRegressor",
    "__version__",
    "coactivation",
    "export_onnx",
    "free_evolve",
    "to_networkx",
    "to_sequential",
]
