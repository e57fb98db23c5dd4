"""Grouped and depthwise KAN convolution layers, drop-in for ``nn.Conv{1,2,3}d``.

- ``conv``: ``KANConvBase``, the shared ``nn.ConvNd``-style API; ``bottleneck``: the bottleneck variants;
- ``families``: one module per basis family, with its 1d/2d/3d and bottleneck classes;
- ``registry``: family names and aliases (``get_conv('gram', ndim=2)``);
- ``basis``: the contract a family implements; ``execution``: how the layers run.
"""

from .basis import BasisFamily
from .bottleneck import BottleneckKANConvBase, bottleneck_width
from .compat import convert_tck_kagn_state_dict
from .conv import KANConvBase
from .execution import ConvSpec, expand_then_conv, fused_kernels_enabled, set_fused_kernels
from .families import *  # noqa: F401,F403
from .helpers import create_act, create_norm
from .registry import (ALIASES, BENCH_KWARGS, BOTTLENECK_FAMILIES, FAMILIES, canonical_conv_name, conv_names,
                       get_conv, register_family)
