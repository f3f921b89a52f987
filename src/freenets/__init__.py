"""FreeNets: layer-free neural networks whose topology is learned from data.

The public names follow the paper: :class:`FreeNet` (section 3.1), :func:`coactivation`
(NCAM and NCIM, section 3.4), :func:`free_evolve` (Algorithm 2) and :class:`Evolver`
(Algorithm 1 inside any training loop).
"""

from freenets.evolve import Evolver, free_evolve
from freenets.model import FreeNet
from freenets.stats import coactivation

__version__ = "0.1.0"

__all__ = ["Evolver", "FreeNet", "__version__", "coactivation", "free_evolve"]
