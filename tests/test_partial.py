"""The pruned layer forms of ``kanzoo.layers.partial``: what they compute, that they cost less, and their errors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kanzoo.layers import FAMILIES
from kanzoo.layers.partial import PartialKANConv, family_arguments, smaller_kan_conv
from test_layers import FAMILY_NAMES, SIZES, kan_layer, randomise_basis_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

PREFIX_FAMILIES = ("kacn", "kaln", "kagn", "kajn")  # a lower degree's bases are the first ones of a higher degree
FUNCTIONAL = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _layer(family: str, nd: int = 2, **kwargs) -> nn.Module:
    layer = kan_layer(family, nd, **{"in_channels": 4, "out_channels": 6, "padding": 1, **kwargs})
    randomise_basis_parameters(layer)
    return layer


def _input(nd: int, channels: int = 4) -> torch.Tensor:
    return torch.randn(2, channels, *SIZES[nd], dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _without_bases(layer: nn.Module, channels: list[int]) -> nn.Module:
    """A copy of ``layer`` whose ``channels`` (layer-wide indices) have zero basis weights."""
    reference = copy.deepcopy(layer)
    per_group = layer.in_channels // layer.groups
    with torch.no_grad():
        view = reference.weight.view(layer.out_channels, per_group, layer.num_responses, -1)
        for channel in channels:
            rows = slice(channel // per_group * (layer.out_channels // layer.groups),
                         (channel // per_group + 1) * (layer.out_channels // layer.groups))
            view[rows, channel % per_group, layer.num_responses - layer.num_bases:] = 0
    return reference


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_keeping_every_channel_computes_the_layer(family: str, nd: int) -> None:
    layer = _layer(family, nd)
    partial = PartialKANConv(layer, range(4))
    x = _input(nd)
    expected = layer(x)
    torch.testing.assert_close(partial(x), expected, atol=1e-10, rtol=0)
    with torch.no_grad():  # the one-convolution path
        torch.testing.assert_close(partial(x), expected, atol=1e-10, rtol=0)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("case", [
    dict(groups=1, kept=[0, 2]), dict(groups=2, kept=[0, 3]), dict(groups=4, kept=[1, 3]),
    dict(groups=2, kept=[2, 3]), dict(groups=1, kept=[1], padding_mode="reflect"),
    dict(groups=2, kept=[0, 2], padding="same", kernel_size=2), dict(groups=1, kept=[3], stride=2, dilation=2),
])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dropped_channels_keep_only_their_base_branch(family: str, case: dict) -> None:
    """The same as the layer with the dropped channels' basis weights set to zero, for every group layout (all
    groups keep channels, some keep none) and padding."""
    case = dict(case)
    kept = case.pop("kept")
    kwargs = {"out_channels": 8, **case}
    layer = _layer(family, 2, **kwargs)
    partial = PartialKANConv(layer, kept)
    reference = _without_bases(layer, [c for c in range(4) if c not in kept])
    x = _input(2)
    torch.testing.assert_close(partial(x), reference(x), atol=1e-10, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(partial(x), reference(x), atol=1e-10, rtol=0)
    assert partial.num_kan_channels == len(kept) and partial.kan.in_channels == len(kept)


def test_no_kept_channel_with_identity_is_a_plain_convolution() -> None:
    layer = _layer("kagn", 2, bias=True)
    partial = PartialKANConv(layer, [], linear_activation="identity")
    assert partial.kan is None and isinstance(partial.base_activation, nn.Identity)
    x = _input(2)
    expected = F.conv2d(x, partial.linear.weight, partial.linear.bias, padding=1)
    torch.testing.assert_close(partial(x), expected, atol=0, rtol=0)
    assert {name for name, _ in partial.named_parameters()} == {"linear.weight", "linear.bias"}


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_depthwise_layers_keep_channels_per_group(nd: int) -> None:
    layer = kan_layer("kacn", nd, in_channels=4, out_channels=8, groups=4, padding=1)
    partial = PartialKANConv(layer, [0, 3])
    x = _input(nd)
    torch.testing.assert_close(partial(x), _without_bases(layer, [1, 2])(x), atol=1e-10, rtol=0)
    assert partial.kan.groups == 2 and partial.out_index.tolist() == [0, 1, 6, 7]


@pytest.mark.parametrize("family", PREFIX_FAMILIES)
def test_a_lower_degree_drops_the_top_bases(family: str) -> None:
    layer = _layer(family, 2)
    with torch.no_grad():
        layer.basis_weight[:, :, -1] = 0
    smaller = smaller_kan_conv(layer, degree=layer.degree - 1)
    assert smaller.num_bases == layer.num_bases - 1 and type(smaller) is type(layer)
    x = _input(2)
    torch.testing.assert_close(smaller(x), layer(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_smaller_layers_keep_the_rest_of_the_layer(family: str) -> None:
    layer = kan_layer(family, 2, in_channels=4, out_channels=6, padding=1, norm_layer="batch", act_layer="relu",
                      dropout=0.1)
    name = next(key for key in ("degree", "grid_size", "num_wavelets") if key in family_arguments(layer))
    smaller = smaller_kan_conv(layer, **{name: getattr(layer, name) - 1})
    assert smaller.num_bases == layer.num_bases - 1 and getattr(smaller, name) == getattr(layer, name) - 1
    assert isinstance(smaller.norm, nn.BatchNorm2d) and isinstance(smaller.act, nn.ReLU)
    assert smaller.dropout.p == 0.1 and smaller.padding == layer.padding and smaller.groups == layer.groups
    torch.testing.assert_close(smaller.base_weight, layer.base_weight, atol=0, rtol=0)
    assert smaller.weight.numel() < layer.weight.numel()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_pruned_forms_cost_fewer_parameters_and_flops(family: str) -> None:
    layer = kan_layer(family, 2, in_channels=8, out_channels=8, padding=1)
    x = torch.randn(1, 8, 8, 8, dtype=torch.float64)

    def flops(module: nn.Module) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(x)
        return counter.get_total_flops()

    partial = PartialKANConv(layer, [0, 1, 2])
    plain = PartialKANConv(layer, [], linear_activation="identity")
    params = [sum(p.numel() for p in m.parameters()) for m in (layer, partial, plain)]
    assert params[0] > params[1] > params[2]
    assert flops(layer) > flops(partial) > flops(plain)


def test_gradients_reach_both_parts_and_unbatched_inputs_work() -> None:
    layer = _layer("wavkan", 2)
    partial = PartialKANConv(layer, [1, 2])
    partial(_input(2)).square().sum().backward()
    for name, param in partial.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    single = _input(2)[0]
    torch.testing.assert_close(partial(single), partial(single.unsqueeze(0))[0])


def test_channel_parameters_follow_the_kept_channels() -> None:
    layer = _layer("wavkan", 2)
    partial = PartialKANConv(layer, [1, 3])
    torch.testing.assert_close(partial.kan.shift, layer.shift[[1, 3]])
    torch.testing.assert_close(partial.kan.scale, layer.scale[[1, 3]])
    assert FAMILIES["wavkan"][1].channel_parameters == ("shift", "scale")


def test_partial_layers_copy_and_pickle() -> None:
    partial = PartialKANConv(_layer("kan", 2), [0, 1])
    x = _input(2)
    for clone in (copy.deepcopy(partial), pickle.loads(pickle.dumps(partial))):
        torch.testing.assert_close(clone(x), partial(x))


def test_bad_arguments_name_the_problem() -> None:
    layer = _layer("kacn", 2, groups=2, out_channels=6)
    with pytest.raises(ValueError, match="same number of them"):
        PartialKANConv(layer, [0, 1, 2])
    with pytest.raises(ValueError, match="distinct input channels from 0 to 3"):
        PartialKANConv(layer, [0, 4])
    with pytest.raises(ValueError, match="integers"):
        PartialKANConv(layer, [True])
    with pytest.raises(ValueError, match="degree=5 cannot replace degree=2"):
        smaller_kan_conv(layer, degree=5)
    with pytest.raises(ValueError, match="'alpha' is not an integer argument"):
        smaller_kan_conv(kan_layer("kajn", 2), alpha=0)
    with pytest.raises(TypeError, match="built from a KAN convolution"):
        PartialKANConv(nn.Conv2d(4, 4, 3), [0])
    with pytest.raises(ValueError, match="unknown activation"):
        PartialKANConv(layer, [], linear_activation="cubic")
