"""How KAN layers run: the expansion (eager or compiled), its memory layout, and the recomputing backward.

Families never read this package; they implement :class:`~kanzoo.layers.basis.BasisFamily`, which is
all it reads from them.

- ``expander``: the strategy of one layer (padding, memory layout, eager or compiled);
- ``layout``: the stored layout of the expansion;
- ``responses``: the base branch plus the family's bases, and their VJP;
- ``eager``: the blocked eager expansion and rebuild;
- ``compiled``: the TorchInductor CPU kernels;
- ``convolution``: the one grouped convolution and its backward;
- ``recompute``: the autograd Function that rebuilds the expansion in backward instead of storing it.
"""

from .compiled import fused_kernels_enabled, set_fused_kernels
from .convolution import ConvSpec
from .expander import Expander
from .recompute import expand_then_conv

__all__ = ["ConvSpec", "Expander", "expand_then_conv", "fused_kernels_enabled", "set_fused_kernels"]
