"""VGGKAN: exact reproduction of the Torch-Conv-KAN VGG networks, full-size key mapping, and the timm model API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import kanzoo
from kanzoo.layers import BottleneckKAGNConv2d, KACNConv2d, KAGNConv2d
from kanzoo.models.vggkan import VGGKAN, convert_tck_vgg_state_dict, is_tck_vgg_state_dict

DATA = Path(__file__).parent / "data"
TINY = dict(cfg=[4, "M", 8, "M", 8, 8], width_multiplier=1, degree=2, num_classes=5)
FULL_SIZE = {"brivangl/vgg_kagn_bn11_v4": "vggkan_11", "brivangl/vgg_kagn11_v2": "vggkan_11_v2_in",
             "brivangl/vgg_kagn11_v4": "vggkan_11_v4_in"}


def _stage_layout(description: str) -> list[int | str]:
    """'VGG11v4 with stage widths 4 M 8 M 16 16 ...' -> [4, 'M', 8, 'M', 16, 16, ...]."""
    words = description.split("stage widths ", 1)[1].split()
    return [w if w == "M" else int(w) for w in words]


@pytest.mark.parametrize("case, architecture", [("vgg_kagn_11v2_small", "vggkan_11_v2_in"),
                                                ("vgg_kagn_bn_11v4_small", "vggkan_11")])
def test_reproduces_the_original_network(case, architecture):
    tensors = load_file(DATA / "tck_goldens.safetensors")
    with safe_open(DATA / "tck_goldens.safetensors", "pt") as f:
        args = json.loads(f.metadata()[case])
    state = {k.split("/state/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{case}/state/")}
    assert is_tck_vgg_state_dict(state)
    model = kanzoo.create_model(architecture, cfg=_stage_layout(args["vgg_type"]), width_multiplier=args["width_scale"],
                                degree=args["degree"], num_classes=args["num_classes"],
                                in_chans=args["input_channels"]).eval()
    model.load_state_dict(state)  # the pre-hook converts the original keys
    with torch.no_grad():
        out = model(tensors[f"{case}/input"])
    torch.testing.assert_close(out, tensors[f"{case}/output"], atol=1e-5, rtol=0)
    converted = convert_tck_vgg_state_dict(state)
    assert set(converted) == set(model.state_dict())


@pytest.mark.parametrize("repo", sorted(FULL_SIZE))
def test_full_size_checkpoints_map_every_key(repo):
    spec = json.loads((DATA / "tck_vgg_state_dicts.json").read_text())[repo]
    with torch.device("meta"):
        model = kanzoo.create_model(FULL_SIZE[repo])
        original = {k: torch.empty(shape) for k, shape in spec["state_dict"].items()}
    converted = convert_tck_vgg_state_dict(original)
    target = model.state_dict()
    assert set(converted) == set(target)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in target.items()}
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"]
    with pytest.raises(KeyError, match="unmapped"):
        convert_tck_vgg_state_dict({**original, "features.0.extra": torch.empty(1, device="meta")})


def test_deeper_variants_follow_the_vgg_depths():
    convs = {}
    for name in ("vggkan_11", "vggkan_13", "vggkan_16", "vggkan_19"):
        with torch.device("meta"):
            model = kanzoo.create_model(name)
        convs[name] = sum(isinstance(m, BottleneckKAGNConv2d) for m in model.features)
        assert model.num_features == 512 and len(model.feature_info) == 6
    assert convs == {"vggkan_11": 10, "vggkan_13": 12, "vggkan_16": 15, "vggkan_19": 18}


def test_classifier_api():
    model = kanzoo.create_model("vggkan_11", **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 8, 8, 8) and model.num_features == model.head_hidden_size == 8
    assert model.forward_head(feats, pre_logits=True).shape == (2, 8)
    assert model(x).shape == (2, 5) and model.get_classifier() is model.classifier[1]
    assert model.pretrained_cfg["classifier"] == "classifier.1"
    model.reset_classifier(0)
    assert model(x).shape == (2, 8)
    model.reset_classifier(3, global_pool="catavgmax")
    assert model(x).shape == (2, 3) and model.get_classifier().in_features == 16
    unpooled = kanzoo.create_model("vggkan_11", **dict(TINY, num_classes=0, global_pool="")).eval()
    assert unpooled(x).shape == (2, 8, 8, 8)
    dense = kanzoo.create_model("vggkan_11", **dict(TINY, global_pool="")).eval()
    assert dense(x).shape == (2, 5, 8, 8)  # per-position logits with the same linear weights


def test_feature_extraction_and_grad_checkpointing():
    features = timm.create_model("vggkan_11", features_only=True, out_indices=(0, 1, 2), **TINY)
    maps = features(torch.randn(1, 3, 32, 32))
    assert [m.shape[1] for m in maps] == features.feature_info.channels() == [4, 8, 8]
    assert [m.shape[-1] for m in maps] == [32, 16, 8]
    model = kanzoo.create_model("vggkan_11", **dict(TINY, conv_drop_rate=0.0, drop_rate=0.0)).eval()
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for want, param in zip(expected, model.parameters()):
        torch.testing.assert_close(param.grad, want)


def test_conv_families_groups_layouts_and_channels():
    kacn = kanzoo.create_model("vggkan_11", **dict(TINY, conv="kacn", groups=2))
    assert isinstance(kacn.features[0], KACNConv2d) and kacn.features[0].groups == 1
    assert kacn.features[2].groups == 2 and kacn.features[2].degree == 2
    spline = kanzoo.create_model("vggkan_13", cfg=[4, "M", 8], width_multiplier=1, conv="kan", grid_size=3)
    assert spline.features[0].grid_size == 3 and not hasattr(spline.features[0], "degree")
    plain = kanzoo.create_model("vggkan_11_v4_in", **TINY)
    assert isinstance(plain.features[0], KAGNConv2d)
    assert isinstance(plain.features[0].norm, torch.nn.InstanceNorm2d) and plain.features[0].norm.affine
    gray = kanzoo.create_model("vggkan_11", **dict(TINY, in_chans=1))
    assert gray.features[0].inner_channels == 3  # the bottleneck stem keeps its RGB inner width
    assert gray(torch.randn(2, 1, 16, 16)).shape == (2, 5)
    assert kanzoo.create_model("vggkan_11", **dict(TINY, in_chans=1, conv="kagn"))(torch.randn(1, 1, 8, 8)).shape \
        == (1, 5)


@pytest.mark.parametrize("cfg, words", [(["M", 4], "start with a conv"), ([4, 0], "positive ints"),
                                        ("v7", "unknown VGG layout"), (["M"], "at least one conv width")])
def test_bad_layouts_are_named(cfg, words):
    with pytest.raises(ValueError, match=words):
        VGGKAN(cfg=cfg)


def test_negative_num_classes_is_refused():
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        kanzoo.create_model("vggkan_11", cfg=[4, "M", 8], width_multiplier=1, num_classes=-1)
    model = kanzoo.create_model("vggkan_11", cfg=[4, "M", 8], width_multiplier=1, num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        model.reset_classifier(-2)
    assert model.num_classes == 3 and model.get_classifier().out_features == 3


def _conv_widths(model):
    return [m.out_channels for m in model.features if not isinstance(m, torch.nn.MaxPool2d)]


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_width_is_a_float_multiplier_and_width_multiplier_its_alias():
    small = dict(cfg=[4, "M", 8, "M", 8], degree=2, num_classes=3)
    assert _conv_widths(kanzoo.create_model("vggkan_11", **small)) == [8, 16, 16]  # default 2, as published
    half = kanzoo.create_model("vggkan_11", width=0.5, **small)
    assert _conv_widths(half) == [2, 4, 4]
    assert half(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    assert _shapes(kanzoo.create_model("vggkan_11", width_multiplier=0.5, **small)) == _shapes(half)
    assert _conv_widths(VGGKAN(cfg=[4, "M", 8], width=1.5)) == [6, 12]
    with pytest.raises(TypeError, match=r"width=0\.5 and width_multiplier=1.*pass only width="):
        kanzoo.create_model("vggkan_11", width=0.5, width_multiplier=1, **small)
    with pytest.raises(ValueError, match="width must be positive"):
        kanzoo.create_model("vggkan_11", width=0, **small)


def test_depthwise_groups_use_the_gcd_of_each_conv():
    model = kanzoo.create_model("vggkan_11", **dict(TINY, cfg=[4, "M", 6, "M", 8, 8], groups="depthwise"))
    assert [m.groups for m in model.features if not isinstance(m, torch.nn.MaxPool2d)] == [1, 2, 2, 8]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(ValueError, match="groups must be a positive int or 'depthwise'"):
        kanzoo.create_model("vggkan_11", **dict(TINY, groups="grouped"))


def test_conv_kwargs_and_loose_family_kwargs_merge():
    base = dict(cfg=[4, "M", 8], width=1, num_classes=3, conv="kacn")
    assert kanzoo.create_model("vggkan_11", **base).features[2].degree == 5  # the entries' default degree
    from_dict = kanzoo.create_model("vggkan_11", conv_kwargs=dict(degree=2), **base)
    assert [from_dict.features[i].degree for i in (0, 2)] == [2, 2]
    assert kanzoo.create_model("vggkan_11", conv_kwargs=dict(degree=2), degree=3, **base).features[2].degree == 3
    spline = kanzoo.create_model("vggkan_11", **dict(base, conv="kan"), conv_kwargs=dict(grid_size=3), spline_order=2)
    assert (spline.features[2].grid_size, spline.features[2].spline_order) == (3, 2)
    relu = kanzoo.create_model("vggkan_11", act_layer="relu", **base)
    assert isinstance(relu.features[2].act, torch.nn.ReLU)
    dropped = kanzoo.create_model("vggkan_11", conv_drop_rate=0.5, **base)
    assert not isinstance(dropped.features[0].dropout, torch.nn.Dropout)  # the stem has no conv dropout
    assert dropped.features[2].dropout.p == 0.5


def test_unknown_and_conflicting_kwargs_are_named():
    base = dict(cfg=[4, "M", 8], width=1)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['grid_size'\].*conv='bottleneck_kagn'"):
        kanzoo.create_model("vggkan_11", grid_size=3, **base)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['nope'\]"):
        VGGKAN(conv_kwargs=dict(nope=1), **base)
    with pytest.raises(TypeError, match=r"set by the architecture"):
        kanzoo.create_model("vggkan_11", kernel_size=5, **base)
    with pytest.raises(TypeError, match=r"conv_drop_rate= instead of dropout="):
        kanzoo.create_model("vggkan_11", dropout=0.1, **base)


def test_unpooled_head_keeps_per_position_logits_on_reset():
    model = kanzoo.create_model("vggkan_11", **TINY).eval()
    model.reset_classifier(4, global_pool="")
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4, 4, 4)
    assert model.get_classifier() is model.classifier[1] and model.global_pool.pool_type == ""
