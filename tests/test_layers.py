"""Properties of the KAN convolution layers: groups, plain-conv limit, shapes, gradients, memory, errors, dtypes.

Agreement with an independent slow reference lives in ``test_layers_reference.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.func import functional_call

import kanzoo.layers as L
from kanzoo.layers import (BOTTLENECK_FAMILIES, FAMILIES, BottleneckKAGNConv2d, KAGNConv2d, canonical_conv_name,
                           conv_names, convert_tck_kagn_state_dict, get_conv)

FAMILY_NAMES = ("kan", "fastkan", "kacn", "kaln", "kagn", "kajn", "kabn", "wavkan", "relukan")
SMALL_KWARGS = {
    "kan": dict(grid_size=3, spline_order=2),
    "fastkan": dict(grid_size=3),
    "kacn": dict(degree=2),
    "kaln": dict(degree=2),
    "kagn": dict(degree=3),
    "kajn": dict(degree=2, alpha=0.5, beta=2.0),
    "kabn": dict(degree=2),
    "wavkan": dict(num_wavelets=2, wavelet="morlet"),
    "relukan": dict(grid_size=3, spline_order=2),
}
CLASS_STEMS = {"kan": "KANConv", "fastkan": "FastKANConv", "kacn": "KACNConv", "kaln": "KALNConv",
               "kagn": "KAGNConv", "kajn": "KAJNConv", "kabn": "KABNConv", "wavkan": "WavKANConv",
               "relukan": "ReLUKANConv"}
PLAIN_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
FUNCTIONAL_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
SIZES = {1: (9,), 2: (6, 7), 3: (4, 5, 6)}
GOLDENS = Path(__file__).parent / "data" / "tck_goldens.safetensors"


pytestmark = pytest.mark.usefixtures("single_thread")


def per_dim(value, nd: int):
    """First ``nd`` entries of a 3-list; anything else unchanged."""
    return tuple(value[:nd]) if isinstance(value, list) else value


def kan_layer(family: str, nd: int = 2, in_channels: int = 4, out_channels: int = 4, kernel_size=3, **kwargs):
    """A small layer of ``family`` (float64 unless told otherwise) with its family's small settings."""
    kwargs.setdefault("dtype", torch.float64)
    return FAMILIES[family][nd - 1](in_channels, out_channels, kernel_size, **SMALL_KWARGS[family], **kwargs)


def randomise_basis_parameters(layer: nn.Module) -> None:
    """Move learned basis parameters away from their (often tiny or uniform) initial values."""
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name.endswith("beta_weights"):
                param.copy_(torch.randn_like(param) * 0.3)
            elif name.endswith("shift"):
                param.add_(torch.randn_like(param) * 0.3)
            elif name.endswith("scale"):
                param.mul_(torch.rand_like(param) + 0.5)


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct storages saved for backward by ``module(x)``, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values())


# ---------------------------------------------------------------------------------------------
# Groups

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_groups_own_independent_weights(family: str) -> None:
    torch.manual_seed(0)
    layer = kan_layer(family, in_channels=4, out_channels=4, groups=2, padding=1)
    half = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    y = layer(torch.cat([half, half], dim=1))
    assert not torch.allclose(y[:, :2], y[:, 2:], atol=1e-6)
    with torch.no_grad():
        layer.weight[2:] = layer.weight[:2]
        layer.bias[2:] = layer.bias[:2]
    y = layer(torch.cat([half, half], dim=1))
    torch.testing.assert_close(y[:, :2], y[:, 2:])


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_grouped_layer_equals_separate_layers(family: str, nd: int) -> None:
    torch.manual_seed(nd)
    groups, in_channels, out_channels = 3, 6, 9
    common = dict(stride=per_dim([2, 1, 1], nd), padding=1, padding_mode="reflect")
    layer = kan_layer(family, nd, in_channels, out_channels, groups=groups, **common)
    randomise_basis_parameters(layer)
    x = torch.randn(2, in_channels, *SIZES[nd], dtype=torch.float64)
    cg, og = in_channels // groups, out_channels // groups
    outs = []
    for g in range(groups):
        single = kan_layer(family, nd, cg, og, **common)
        state = {"weight": layer.weight[g * og:(g + 1) * og], "bias": layer.bias[g * og:(g + 1) * og]}
        if family == "wavkan":
            state.update(shift=layer.shift[g * cg:(g + 1) * cg], scale=layer.scale[g * cg:(g + 1) * cg])
        if family == "kagn":
            state["beta_weights"] = layer.beta_weights
        single.load_state_dict(state)
        outs.append(single(x[:, g * cg:(g + 1) * cg]))
    torch.testing.assert_close(layer(x), torch.cat(outs, dim=1))


# ---------------------------------------------------------------------------------------------
# The plain-convolution limit and translation equivariance

LIMIT_CASES = [
    dict(padding=1, padding_mode="zeros", groups=2),
    dict(padding="same", kernel_size=[2, 4, 2], padding_mode="zeros", groups=4),
    dict(padding=[2, 1, 1], stride=2, padding_mode="reflect", groups=1),
    dict(padding="same", kernel_size=[4, 2, 3], dilation=[1, 2, 1], padding_mode="replicate", groups=2),
    dict(padding=[1, 2, 1], dilation=2, padding_mode="circular", groups=4),
    dict(padding="valid", stride=[1, 2, 2], padding_mode="zeros", groups=1),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("case", range(len(LIMIT_CASES)))
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_zero_basis_identity_base_is_plain_conv(nd: int, case: int) -> None:
    family = FAMILY_NAMES[(case + len(LIMIT_CASES) * (nd - 1)) % len(FAMILY_NAMES)]
    torch.manual_seed(case)
    args = {key: per_dim(value, nd) for key, value in LIMIT_CASES[case].items()}
    kernel = args.pop("kernel_size", 3)
    layer = kan_layer(family, nd, 4, 8, kernel, base_activation="identity", **args)
    with torch.no_grad():
        layer.basis_weight.zero_()
    x = torch.randn(2, 4, *SIZES[nd], dtype=torch.float64)
    if args["padding_mode"] == "zeros":
        expected = FUNCTIONAL_CONVS[nd](x, layer.base_weight, layer.bias, layer.stride, args["padding"],
                                        layer.dilation, layer.groups)
    else:
        conv = PLAIN_CONVS[nd](4, 8, kernel, dtype=torch.float64, **args)
        conv.load_state_dict({"weight": layer.base_weight, "bias": layer.bias})
        expected = conv(x)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_translation_equivariance_on_interior(family: str, nd: int) -> None:
    torch.manual_seed(0)
    layer = kan_layer(family, nd, 2, 3, padding=1)
    shift = 2
    x = torch.randn(1, 2, *(s + 2 for s in SIZES[nd]), dtype=torch.float64)
    shifted = x[(..., *[slice(shift, None)] * nd)]
    y, y_shifted = layer(x), layer(shifted)
    interior = (..., *[slice(1, -1)] * nd)
    moved = (..., *[slice(shift + 1, -1)] * nd)
    torch.testing.assert_close(y_shifted[interior], y[moved])


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_expand_then_plain_conv_is_the_layer(family: str, mode: str) -> None:
    """The public ``expand(x)`` is what the single grouped convolution reads."""
    torch.manual_seed(0)
    layer = kan_layer(family, in_channels=4, out_channels=6, groups=2, padding=1, stride=(2, 1), padding_mode=mode)
    randomise_basis_parameters(layer)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    expanded = layer.expand(x, *layer.basis_parameters())
    assert expanded.shape[1] == 4 * layer.weight.shape[1] // 2
    conv_padding = 1 if mode == "zeros" else 0
    expected = F.conv2d(expanded, layer.weight, layer.bias, layer.stride, conv_padding, layer.dilation, layer.groups)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_memory_layout_of_the_input_does_not_matter(nd: int) -> None:
    torch.manual_seed(0)
    layer = kan_layer("kan", nd, 4, 4, padding=1, groups=2)
    x = torch.randn(2, 4, *SIZES[nd], dtype=torch.float64)
    expected = layer(x)
    channels_last = x.movedim(1, -1).contiguous().movedim(-1, 1)
    strided = torch.randn(2, 4, *(2 * s for s in SIZES[nd]), dtype=torch.float64)[(..., *[slice(None, None, 2)] * nd)]
    strided.copy_(x)
    for variant in (channels_last, strided):
        torch.testing.assert_close(layer(variant), expected)
        variant = variant.clone().requires_grad_()
        layer(variant).sum().backward()
        reference = x.clone().requires_grad_()
        layer(reference).sum().backward()
        torch.testing.assert_close(variant.grad, reference.grad)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_layers_copy_and_pickle(family: str) -> None:
    import copy
    import io

    layer = kan_layer(family, padding=1, norm_layer="batch", act_layer="silu").eval()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(layer), torch.load(buffer, weights_only=False)):
        assert type(clone) is type(layer)
        torch.testing.assert_close(clone(x), layer(x))


# ---------------------------------------------------------------------------------------------
# Shapes, norms, activations, dropout

SHAPE_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=[2, 3, 1], stride=[2, 1, 3], padding=[0, 1, 2], dilation=[1, 2, 1]),
    dict(kernel_size=4, padding="same"),
    dict(kernel_size=[2, 3, 4], padding="same", dilation=[2, 1, 3]),
    dict(kernel_size=3, padding="valid", stride=2),
    dict(kernel_size=5, stride=3, padding=2, dilation=2, groups=2),
    dict(kernel_size=2, padding=1, padding_mode="circular", groups=4),
]


@pytest.mark.parametrize("case", range(len(SHAPE_CASES)))
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_output_shape_equals_nn_conv(nd: int, case: int) -> None:
    args = {key: per_dim(value, nd) for key, value in SHAPE_CASES[case].items()}
    family = FAMILY_NAMES[(case + nd) % len(FAMILY_NAMES)]
    x = torch.randn(2, 4, *(s + 3 for s in SIZES[nd]))
    expected = PLAIN_CONVS[nd](4, 8, **args)(x).shape
    assert FAMILIES[family][nd - 1](4, 8, **args, **SMALL_KWARGS[family])(x).shape == expected
    bottleneck = BOTTLENECK_FAMILIES[family][nd - 1](4, 8, **args, min_internal=2, **SMALL_KWARGS[family])
    assert bottleneck(x).shape == expected


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_norm_and_activation_follow_the_convolution(family: str) -> None:
    torch.manual_seed(0)
    layer = kan_layer(family, padding=1, norm_layer="batch", act_layer="relu")
    bare = kan_layer(family, padding=1)
    bare.load_state_dict(layer.state_dict(), strict=False)
    with torch.no_grad():
        layer.norm.running_mean.normal_()
        layer.norm.running_var.uniform_(0.5, 1.5)
        layer.norm.weight.normal_()
        layer.norm.bias.normal_()
    layer.eval()
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), torch.relu(layer.norm(bare(x))))
    assert isinstance(layer.norm, nn.BatchNorm2d) and isinstance(layer.act, nn.ReLU)


@pytest.mark.parametrize("norm,kind", [("batch", nn.BatchNorm3d), ("instance", nn.InstanceNorm3d),
                                       ("group", nn.GroupNorm), ("layer", nn.LayerNorm)])
def test_norm_names(norm: str, kind: type) -> None:
    layer = L.KACNConv3d(2, 4, 1, norm_layer=norm, act_layer=nn.GELU, degree=1)
    assert isinstance(layer.norm, kind) and isinstance(layer.act, nn.GELU)
    assert layer(torch.randn(2, 2, 3, 3, 3)).shape == (2, 4, 3, 3, 3)
    custom = L.KACNConv1d(2, 4, 1, norm_layer=lambda c: nn.GroupNorm(2, c), degree=1)
    assert isinstance(custom.norm, nn.GroupNorm) and custom.norm.num_groups == 2
    with pytest.raises(ValueError, match="unknown norm_layer 'bogus'"):
        L.KACNConv2d(2, 4, 1, norm_layer="bogus")
    with pytest.raises(ValueError, match="unknown activation 'bogus'"):
        L.KACNConv2d(2, 4, 1, act_layer="bogus")


def test_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    layer = kan_layer("kagn", padding=1, dropout=0.5)
    bare = kan_layer("kagn", padding=1)
    bare.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    assert not torch.allclose(layer(x), bare(x))
    layer.eval()
    torch.testing.assert_close(layer(x), bare(x))


# ---------------------------------------------------------------------------------------------
# Gradients and memory

GRADCHECK_CASES = [(family, 2, "zeros") for family in FAMILY_NAMES] + [("kan", 1, "reflect"), ("wavkan", 3, "circular"),
                                                                       ("kagn", 3, "zeros")]


@pytest.mark.parametrize("family,nd,mode", GRADCHECK_CASES)
def test_gradcheck(family: str, nd: int, mode: str) -> None:
    torch.manual_seed(0)
    layer = kan_layer(family, nd, 2, 2, per_dim([2, 3, 1], nd), groups=2, padding=1, padding_mode=mode)
    randomise_basis_parameters(layer)
    names, params = zip(*layer.named_parameters())
    x = torch.randn(1, 2, *per_dim([3, 3, 2], nd), dtype=torch.float64, requires_grad=True)

    def run(inp: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, dict(zip(names, values)), (inp,))

    assert torch.autograd.gradcheck(run, (x, *params), fast_mode=True, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_parameter_gets_a_gradient(family: str, bottleneck: bool) -> None:
    torch.manual_seed(0)
    classes = BOTTLENECK_FAMILIES if bottleneck else FAMILIES
    extra = dict(min_internal=2) if bottleneck else {}
    layer = classes[family][1](4, 4, 3, padding=1, groups=2, norm_layer="batch", act_layer="silu",
                               **SMALL_KWARGS[family], **extra)
    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    (layer(x) * torch.randn(2, 4, 6, 7)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


RECOMPUTE_CASES = [
    dict(padding=1, groups=2),
    dict(padding="same", kernel_size=[2, 4, 2], padding_mode="zeros", groups=4, bias=False),
    dict(padding=[2, 1, 1], stride=2, dilation=[1, 2, 1], padding_mode="reflect"),
]


@pytest.mark.parametrize("case", range(len(RECOMPUTE_CASES)))
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_recompute_gives_the_same_gradients(family: str, case: int) -> None:
    nd = 1 + case
    args = {key: per_dim(value, nd) for key, value in RECOMPUTE_CASES[case].items()}
    kernel = args.pop("kernel_size", 3)
    torch.manual_seed(case)
    grads = []
    for recompute in (True, False):
        torch.manual_seed(case)
        layer = kan_layer(family, nd, 4, 4, kernel, recompute=recompute, **args)
        randomise_basis_parameters(layer)
        torch.manual_seed(100)
        x = torch.randn(2, 4, *SIZES[nd], dtype=torch.float64, requires_grad=True)
        y = layer(x)
        (y * torch.randn_like(y)).sum().backward()
        grads.append([x.grad] + [p.grad for p in layer.parameters()])
    for with_recompute, stored in zip(*grads):
        torch.testing.assert_close(with_recompute, stored, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_backward_keeps_about_the_input_size(family: str, nd: int) -> None:
    x = torch.randn(2, 8, *[10 - 2 * nd] * nd, requires_grad=True)
    input_bytes = x.numel() * x.element_size()
    args = dict(padding="same" if nd == 1 else 1, groups=2 if nd < 3 else 8, dtype=None)
    recomputed = saved_bytes(kan_layer(family, nd, 8, 8, **args), x)
    stored = saved_bytes(kan_layer(family, nd, 8, 8, recompute=False, **args), x)
    assert recomputed <= 3 * input_bytes
    assert stored >= 2 * recomputed and stored > 3 * input_bytes


def test_double_backward_needs_recompute_false() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    stored = kan_layer("kacn", 2, 2, 2, padding=1, recompute=False)
    names, params = zip(*stored.named_parameters())

    def run(inp: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return functional_call(stored, dict(zip(names, values)), (inp,))

    assert torch.autograd.gradgradcheck(run, (x, *params), fast_mode=True, rtol=1e-6, atol=1e-7)
    recomputed = kan_layer("kacn", 2, 2, 2, padding=1)
    with pytest.raises(RuntimeError, match="create_graph=True.*recompute=False"):
        torch.autograd.grad(recomputed(x).sum() + x.pow(3).sum(), x, create_graph=True)


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(reentrant: bool) -> None:
    torch.manual_seed(0)
    layer = kan_layer("kagn", padding=1, groups=2)
    randomise_basis_parameters(layer)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    grads = []
    for use_checkpoint in (False, True):
        x.grad = None
        layer.zero_grad()
        y = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=reentrant) if use_checkpoint else layer(x)
        y.square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain)


# ---------------------------------------------------------------------------------------------
# Torch-Conv-KAN goldens

def load_golden(name: str) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(GOLDENS), "pt") as f:
        args = json.loads(f.metadata()[name])
        state = {key[len(name) + 7:]: f.get_tensor(key) for key in f.keys() if key.startswith(f"{name}/state/")}
        return args, state, f.get_tensor(f"{name}/input"), f.get_tensor(f"{name}/output")


@pytest.mark.parametrize("name", ["kagn_conv_g1", "kagn_conv_g2_s2", "kagn_bottleneck_bn"])
def test_torch_conv_kan_goldens(name: str) -> None:
    args, state, x, expected = load_golden(name)
    norms = {"InstanceNorm2d": "instance", "BatchNorm2d": "batch"}
    common = dict(stride=args["stride"], padding=args["padding"], dilation=args["dilation"], groups=args["groups"],
                  bias=False, degree=args["degree"], norm_layer=norms[args["norm_layer"]], act_layer="silu")
    if args["cls"] == "BottleNeckKAGNConv2DLayer":
        layer = BottleneckKAGNConv2d(args["input_dim"], args["output_dim"], args["kernel_size"],
                                     dim_reduction=args["dim_reduction"], min_internal=args["min_internal"], **common)
    else:
        assert args["cls"] == "KAGNConv2DLayer"
        layer = KAGNConv2d(args["input_dim"], args["output_dim"], args["kernel_size"], **common)
    used: set[str] = set()
    layer.load_state_dict(convert_tck_kagn_state_dict(state, used=used), strict=True)
    assert used == set(state)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_converter_takes_a_prefix_and_names_a_missing_layer() -> None:
    _, state, x, expected = load_golden("kagn_conv_g1")
    network = {f"features.3.{key}": value for key, value in state.items()}
    network["classifier.weight"] = torch.zeros(1)
    used: set[str] = set()
    converted = convert_tck_kagn_state_dict(network, prefix="features.3.", used=used)
    assert used == set(network) - {"classifier.weight"}
    assert set(converted) == {"weight", "beta_weights", "norm.weight", "norm.bias"}
    with pytest.raises(KeyError, match="features.9."):
        convert_tck_kagn_state_dict(network, prefix="features.9.")


# ---------------------------------------------------------------------------------------------
# Errors and unbatched input

@pytest.mark.parametrize("cls", [KAGNConv2d, BottleneckKAGNConv2d, L.KANConv1d, L.WavKANConv3d])
def test_constructor_errors_name_the_numbers(cls: type) -> None:
    with pytest.raises(ValueError, match=r"in_channels \(6\) must be divisible by groups \(4\)"):
        cls(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match=r"out_channels \(6\) must be divisible by groups \(4\)"):
        cls(8, 6, 3, groups=4)
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        cls(4, 4, 3, padding="full")
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        cls(4, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode must be one of .* padding_mode='mirror'"):
        cls(4, 4, 3, padding_mode="mirror")


@pytest.mark.parametrize("cls", [KAGNConv2d, BottleneckKAGNConv2d])
def test_input_errors(cls: type) -> None:
    layer = cls(4, 8, 3, padding=1)
    with pytest.raises(TypeError, match="floating point input, got dtype torch.int64"):
        layer(torch.ones(1, 4, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expects 4 input channels, got 3"):
        layer(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"expects input of shape \(C, H, W\) or \(N, C, H, W\), got a 5-d tensor"):
        layer(torch.randn(1, 4, 5, 5, 5))
    with pytest.raises(ValueError, match="got a 2-d tensor"):
        layer(torch.randn(4, 5))


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unbatched_input_works_like_nn_conv(nd: int, bottleneck: bool) -> None:
    torch.manual_seed(0)
    classes = BOTTLENECK_FAMILIES if bottleneck else FAMILIES
    layer = classes["kaln"][nd - 1](4, 6, 3, padding=1, stride=2, norm_layer="batch", act_layer="relu").eval()
    x = torch.randn(4, *SIZES[nd])
    y = layer(x)
    assert y.shape == PLAIN_CONVS[nd](4, 6, 3, padding=1, stride=2)(x).shape
    torch.testing.assert_close(y, layer(x.unsqueeze(0))[0])


# ---------------------------------------------------------------------------------------------
# Lookup by name

@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_get_conv_canonical_names(family: str, nd: int) -> None:
    cls = get_conv(family, ndim=nd)
    assert cls.__name__ == f"{CLASS_STEMS[family]}{nd}d" and getattr(L, cls.__name__) is cls
    assert cls.ndim == nd and issubclass(cls, L.KANConvBase)
    bottleneck = get_conv(f"bottleneck_{family}", nd)
    assert bottleneck.__name__ == f"Bottleneck{CLASS_STEMS[family]}{nd}d" and getattr(L, bottleneck.__name__) is bottleneck


@pytest.mark.parametrize("alias,canonical", [("gram", "kagn"), ("Gram", "kagn"), ("chebyshev", "kacn"),
                                             ("legendre", "kaln"), ("jacobi", "kajn"), ("bernstein", "kabn"),
                                             ("rbf", "fastkan"), ("bspline", "kan"), ("wavelet", "wavkan"),
                                             ("relu-kan", "relukan"), ("bottleneck-gram", "bottleneck_kagn"),
                                             ("KAGN", "kagn")])
def test_get_conv_aliases(alias: str, canonical: str) -> None:
    assert canonical_conv_name(alias) == canonical
    assert get_conv(alias, 3) is get_conv(canonical, 3)


def test_get_conv_unknown_names() -> None:
    assert len(conv_names()) == 18 and "kagn" in conv_names() and "bottleneck_wavkan" in conv_names()
    assert get_conv("gram") is KAGNConv2d
    with pytest.raises(ValueError, match="unknown KAN conv family 'fourier'.*'kagn'"):
        get_conv("fourier")
    with pytest.raises(ValueError, match="ndim must be 1, 2 or 3, got 4"):
        get_conv("kagn", ndim=4)


def test_readme_layer_examples_run() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Layers", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```python\n")[1:]
    assert len(blocks) >= 2, "the README's Layers section has lost its examples"
    for block in blocks:
        exec(compile(block.split("```", 1)[0], "README.md", "exec"), {})


# ---------------------------------------------------------------------------------------------
# Buffers, dtypes, devices, compile

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_constants_are_buffers_not_in_state_dict(family: str) -> None:
    layer = kan_layer(family, dtype=None)
    params = dict(layer.named_parameters())
    buffers = dict(layer.named_buffers())
    assert not any(isinstance(b, nn.Parameter) for b in buffers.values())
    assert set(layer.state_dict()) == set(params)
    if family in ("kan", "fastkan", "relukan", "kagn"):
        assert buffers, "this family keeps its grid or constants as buffers"
    layer.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in layer.buffers() if b.is_floating_point())
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    assert layer(torch.randn(1, 4, 5, 5, dtype=torch.float64)).dtype == torch.float64
    layer.to("meta")
    assert all(b.device.type == "meta" for b in layer.buffers())


def test_buffers_match_the_factory_dtype() -> None:
    layer = L.KANConv2d(2, 2, 1, grid_size=5, grid_range=(-1.0, 1.0), dtype=torch.float64)
    assert layer.grid.dtype == torch.float64
    torch.testing.assert_close(layer.grid[4], torch.tensor(-0.6, dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_autocast_bf16_on_cpu(family: str, recompute: bool) -> None:
    torch.manual_seed(0)
    layer = kan_layer(family, groups=2, padding=1, dtype=None, recompute=recompute)
    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    reference = layer(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())
    error = (y.float() - reference).abs().max()
    assert error <= 0.03 * reference.abs().max() + 1e-2, float(error)


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    torch.manual_seed(0)
    layer = kan_layer("kagn", groups=2, padding=1, dtype=None)
    randomise_basis_parameters(layer)
    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    eager = layer(x)
    eager.square().sum().backward()
    eager_grads = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    compiled = torch.compile(layer)(x)
    compiled.square().sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for a, b in zip([x.grad] + [p.grad for p in layer.parameters()], eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none on this machine")
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cuda_matches_cpu(family: str) -> None:
    torch.manual_seed(0)
    layer = kan_layer(family, groups=2, padding=1, norm_layer="batch", act_layer="silu")
    randomise_basis_parameters(layer)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    y_cpu = layer(x)
    y_cpu.square().sum().backward()
    cpu_grads = [x.grad] + [p.grad for p in layer.parameters()]
    gpu_layer = kan_layer(family, groups=2, padding=1, norm_layer="batch", act_layer="silu").cuda()
    gpu_layer.load_state_dict(layer.state_dict())
    x_gpu = x.detach().cuda().requires_grad_()
    y_gpu = gpu_layer(x_gpu)
    y_gpu.square().sum().backward()
    assert all(b.is_cuda for b in gpu_layer.buffers())
    torch.testing.assert_close(y_gpu.detach().cpu(), y_cpu.detach())
    for a, b in zip([x_gpu.grad] + [p.grad for p in gpu_layer.parameters()], cpu_grads):
        torch.testing.assert_close(a.cpu(), b)
