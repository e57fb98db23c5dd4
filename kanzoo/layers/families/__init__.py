"""The basis families, one module each (the polynomial families share one).

Importing a module registers its family. The imports below are in the order of ``FAMILIES`` (and of the
benchmark's table): B-spline, RBF, the polynomials, wavelet, ReLU-KAN.
"""

from . import bspline
from . import rbf
from . import polynomial
from . import wavelet
from . import relukan
from .bspline import *  # noqa: F401,F403
from .polynomial import *  # noqa: F401,F403
from .rbf import *  # noqa: F401,F403
from .relukan import *  # noqa: F401,F403
from .wavelet import *  # noqa: F401,F403

__all__ = bspline.__all__ + rbf.__all__ + polynomial.__all__ + wavelet.__all__ + relukan.__all__
