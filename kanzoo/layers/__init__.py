"""Grouped and depthwise KAN convolution layers, drop-in for ``nn.Conv{1,2,3}d``."""

from .bottleneck import *  # noqa: F401,F403
from .bottleneck import BOTTLENECK_FAMILIES, BottleneckKANConvBase, bottleneck_width
from .compat import convert_tck_kagn_state_dict
from .fused import ConvSpec, expand_then_conv
from .helpers import create_act, create_norm
from .kernels import fused_kernels_enabled, set_fused_kernels
from .kan_conv import *  # noqa: F401,F403
from .kan_conv import FAMILIES, KANConvBase
from .registry import canonical_conv_name, conv_names, get_conv
