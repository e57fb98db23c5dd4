"""``kanzoo.kanify``: exact CNN-to-KAN conversion of any network."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import CondConv2d, StdConv2d
from torch import nn

import kanzoo
from kanzoo.layers import FAMILIES, KANConvBase
from kanzoo.models import KANIFY_FILTERS

pytestmark = pytest.mark.usefixtures("single_thread")


def small_cnn() -> nn.Module:
    """Plain, grouped, depthwise, strided, dilated, 'same', reflect-padded, bias-free and 1d/3d convolutions."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.body = nn.Sequential(
                nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False, padding_mode="reflect"),
                nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4), nn.GELU(),
                nn.Conv2d(12, 6, 1))
            self.line = nn.Conv1d(6, 4, 3, padding=1, padding_mode="circular")
            self.cube = nn.Conv3d(1, 2, 3, padding=1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(self.stem(x))
            line = self.line(y.mean(-1))
            cube = self.cube(y.unsqueeze(1)).mean((1, 2))
            return torch.cat([line.flatten(1), cube.flatten(1)], 1)

    return Net()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max()) if not a.requires_grad else relative_error(a.detach(), b)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_computes_the_same_function(family: str) -> None:
    torch.manual_seed(0)
    net = small_cnn()
    x = torch.randn(2, 3, 12, 10)
    expected = {mode: net.train(mode)(x).detach() for mode in (True, False)}
    kan = kanzoo.kanify(net, family)
    assert len(kan.kanify_record.converted) == 6 and not kan.kanify_record.skipped
    assert sum(isinstance(m, KANConvBase) for m in kan.modules()) == 6
    assert torch.all(kan.stem.basis_weight == 0) and torch.equal(kan.stem.base_weight, net.stem.base_weight)
    for mode in (False, True):
        assert relative_error(kan.train(mode)(x), expected[mode]) < 1e-5
    kan.zero_grad()
    kan(x).square().sum().backward()
    missing = [name for name, p in kan.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"
    assert kan.stem.weight.grad.view(8, 3, -1, 3, 3)[:, :, 1:].abs().sum() > 0, "zero basis weights must learn"


@pytest.mark.parametrize("name, kind", [("resnet10t", None), ("regnetx_002", None), ("convnext_atto", "depthwise"),
                                        ("tf_efficientnet_b0", "spatial"), ("mobilenetv3_small_050", "no_stem")])
def test_timm_networks_stay_exact(name: str, kind: str | None) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        kanzoo.kanify(model, "kagn", filter=kind, degree=1)
        assert relative_error(model(x), expected) < 1e-5
    record = model.kanify_record
    assert record.converted and not record.skipped and record.filter == (kind or "all")
    convs = dict(model.named_modules())
    if kind == "depthwise":
        assert all(convs[n].groups == convs[n].in_channels > 1 for n in record.converted)
    if kind == "no_stem":
        assert model.pretrained_cfg["first_conv"] + ".weight" in model.state_dict()
        assert model.pretrained_cfg["first_conv"] not in record.converted


def test_dynamic_same_padding_is_converted_exactly() -> None:
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_b0", num_classes=3).eval()
    inputs = [torch.randn(1, 3, size, size) for size in (31, 32, 33)]  # the padding depends on the input size
    with torch.no_grad():
        expected = [model(x) for x in inputs]
        kanzoo.kanify(model, "kacn", degree=1)
        stem = model.conv_stem
        assert isinstance(stem, kanzoo.models._kanify.SamePadKANConv2d) and stem.conv.stride == (2, 2)
        for x, y in zip(inputs, expected):
            assert relative_error(model(x), y) < 1e-5


def test_inexact_conv_like_modules_are_kept_and_reported() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), StdConv2d(4, 4, 3), CondConv2d(4, 4, 3, num_experts=2), nn.Conv2d(4, 2, 1))
    with pytest.warns(UserWarning, match=r"left 2 conv-like.*1 \(StdConv2d\), 2 \(CondConv2d\)"):
        kanzoo.kanify(net, "kagn")
    assert net.kanify_record.skipped == {"1": "StdConv2d", "2": "CondConv2d"}
    assert net.kanify_record.converted == ["0", "3"]
    assert type(net[1]) is StdConv2d


def test_filters_pick_the_convolutions() -> None:
    assert set(KANIFY_FILTERS) == {"all", "spatial", "depthwise", "no_stem"}
    net = small_cnn()
    kanzoo.kanify(net, "kagn", filter="spatial")
    assert net.kanify_record.converted == ["stem", "body.2", "body.3", "line", "cube"]
    net = small_cnn()
    kanzoo.kanify(net, "kagn", filter="no_stem")
    assert "stem" not in net.kanify_record.converted and len(net.kanify_record.converted) == 5
    net = small_cnn()
    kanzoo.kanify(net, "kagn", filter=lambda name, module: name.startswith("body"))
    assert net.kanify_record.converted == ["body.2", "body.3", "body.5"] and net.kanify_record.filter == "custom"
    conv = kanzoo.kanify(nn.Conv2d(2, 2, 3), "kaln")
    assert isinstance(conv, KANConvBase) and conv.kanify_record.converted == [""]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown kanify filter 'stem'.*'no_stem'"):
        kanzoo.kanify(small_cnn(), filter="stem")
    with pytest.raises(ValueError, match="not 'bottleneck_kagn'.*conv='kagn'"):
        kanzoo.kanify(small_cnn(), "bottleneck_kagn")
    with pytest.raises(TypeError, match=r"sets \['base_activation'\]"):
        kanzoo.kanify(small_cnn(), base_activation="silu")
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['grid_size'\].*'degree'"):
        kanzoo.kanify(small_cnn(), "kacn", grid_size=4)
    with pytest.raises(ValueError, match="unknown KAN conv family 'fourier'"):
        kanzoo.kanify(small_cnn(), "fourier")
