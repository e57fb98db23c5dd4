"""Smoke tests of every registry entry, parametrised from ``kanzoo.list_models()`` at collection time.

Entries keep their real layouts (depths, blocks, stage patterns); only widths shrink, through each
family's width argument, so that the whole file runs in about two minutes on two CPU cores.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import timm
import torch
from torch import nn

import kanzoo
from kanzoo.layers import KANConvBase, conv_names
from kanzoo.layers.bottleneck import BottleneckKANConvBase
from kanzoo.models import KANSegmentationModel

MODELS = kanzoo.list_models()
SIZE = 64  # every entry accepts it (deepest reduction 32) and keeps 2x2 maps there (InstanceNorm needs > 1)

# width arguments per family (the name's first part); entries named here get theirs instead
_TINY_BY_FAMILY: dict[str, dict[str, Any]] = {
    "reskanet": dict(width=0.125),
    "densekanet": dict(width=0.125),
    "vggkan": dict(width_multiplier=1),
    "ukanet": dict(width=0.125),
    "u2kanet": dict(width=0.125),
}
_TINY_BY_NAME: dict[str, dict[str, Any]] = {"ukanet": dict(encoder_kwargs=dict(width_multiplier=1))}


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_kwargs(name: str) -> dict[str, Any]:
    """The shrinking arguments for an entry (empty for a family this file does not know yet)."""
    return dict(_TINY_BY_NAME.get(name, _TINY_BY_FAMILY.get(name.split("_")[0], {})))


def tiny(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return kanzoo.create_model(name, **{**tiny_kwargs(name), **kwargs})


def _is_segmentation(name: str) -> bool:
    with torch.device("meta"):
        return bool(getattr(tiny(name), "is_segmentation", False))


SEGMENTATION = [name for name in MODELS if _is_segmentation(name)]
CLASSIFIERS = [name for name in MODELS if name not in SEGMENTATION]


def _out_shape(name: str, batch: int, classes: int, size: int = SIZE) -> tuple[int, ...]:
    return (batch, classes, size, size) if name in SEGMENTATION else (batch, classes)


def _named_weight(model: nn.Module, names: str | tuple[str, ...]) -> list[torch.Tensor]:
    names = (names,) if isinstance(names, str) else names
    return [model.get_submodule(name).weight for name in names]


def test_registry_lists_the_issue_entries() -> None:
    required = {f"reskanet_{d}" for d in (18, 34, 50, 101, 152)} | {f"densekanet_{d}" for d in (121, 161, 169, 201)}
    required |= {f"vggkan_{d}" for d in (11, 13, 16, 19)} | {"ukanet", "ukanet_18", "ukanet_34", "u2kanet",
                                                            "u2kanet_small"}
    assert required <= set(MODELS)
    assert kanzoo.list_models("reskanet*") == ["reskanet_18", "reskanet_34", "reskanet_50", "reskanet_101",
                                               "reskanet_152"]
    assert all(name in timm.list_models() for name in MODELS)
    assert isinstance(timm.create_model("reskanet_18", width=0.125), kanzoo.models.ResKANet)
    assert not any(name.startswith("resnet") for name in MODELS)  # timm's own models are not kanzoo's
    assert kanzoo.is_model("reskanet_18") and not kanzoo.is_model("resnet18") and not kanzoo.is_model("nope")


def test_pretrained_listing_has_weights() -> None:
    tagged = kanzoo.list_models(pretrained=True)
    for name in tagged:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg is not None and (cfg.hf_hub_id or cfg.file or cfg.url), name
        assert kanzoo.is_model(name)
    archs_with_weights = {timm.models.get_arch_name(name) for name in tagged}
    for name in MODELS:
        if name not in archs_with_weights:
            assert not timm.models.get_pretrained_cfg(name).has_weights, name


def test_unknown_name_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'reskanet_18'"):
        kanzoo.create_model("reskanet18")
    with pytest.raises(ValueError, match=r"timm model: build it with timm.create_model"):
        kanzoo.create_model("resnet18")


def test_no_kanzoo_name_shadows_a_timm_model() -> None:
    code = ("import timm; before = set(timm.list_models()); import kanzoo; "
            "print(sorted(before & set(kanzoo.list_models())))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_eval(name: str) -> None:
    """Train-mode backward reaches every parameter with a finite gradient; eval forward is deterministic."""
    model = tiny(name, num_classes=7)
    x = torch.randn(2, 3, SIZE, SIZE)
    model.train()
    out = model(x)
    assert out.shape == _out_shape(name, 2, 7)
    (out * torch.randn_like(out)).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: {pname} has a non-finite gradient"
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1])  # the two samples are processed on their own


@pytest.mark.parametrize("name", MODELS)
def test_in_chans_1(name: str) -> None:
    model = tiny(name, in_chans=1, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, SIZE, SIZE))
    assert out.shape == _out_shape(name, 2, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg(name: str) -> None:
    """first_conv names the weighted modules that read the image; classifier those that emit the classes."""
    model = tiny(name, in_chans=5).eval()
    cfg = model.pretrained_cfg
    assert len(cfg["input_size"]) == 3 and cfg["input_size"][-1] % 32 == 0
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    first = (cfg["first_conv"],) if isinstance(cfg["first_conv"], str) else cfg["first_conv"]
    seen: dict[str, torch.Size] = {}

    def record(key: str) -> Any:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen.setdefault(key, args[0].shape)
        return hook

    for module_name in first:
        module = model.get_submodule(module_name)
        assert isinstance(module.weight, torch.Tensor) and module.weight.shape[1] % 5 == 0
        module.register_forward_pre_hook(record(module_name))
    x = torch.randn(1, 5, SIZE, SIZE)
    with torch.no_grad():
        model(x)
    assert seen == {module_name: x.shape for module_name in first}
    for weight in _named_weight(model, cfg["classifier"]):
        assert weight.shape[0] == cfg["num_classes"]
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == tuple(cfg["input_size"])


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_api(name: str) -> None:
    model = tiny(name, num_classes=5).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[:2] == (2, model.num_features)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
        assert model.forward_head(features).shape == (2, 5)
        assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 5
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(9)
        assert model(x).shape == (2, 9)
        unpooled = tiny(name, num_classes=0, global_pool="").eval()
        fmap = unpooled(x)
    assert fmap.dim() == 4 and fmap.shape[:2] == (2, unpooled.num_features)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_features_only(name: str) -> None:
    size = 64
    reference = tiny(name)
    info = reference.feature_info
    assert len(info) >= 3
    model = tiny(name, features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, size, size))
    chosen = [info[i] for i in model.feature_info.out_indices]
    assert len(maps) == len(chosen) >= 3
    for fmap, level in zip(maps, chosen):
        assert fmap.shape[1] == level["num_chs"]
        assert size // fmap.shape[-1] == level["reduction"]
    assert model.feature_info.channels() == [level["num_chs"] for level in chosen]


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing_recomputes_and_matches(name: str) -> None:
    model = tiny(name, num_classes=4).train()
    x = torch.randn(2, 3, SIZE, SIZE)
    calls = {"n": 0}

    def count(*_: Any) -> None:
        calls["n"] += 1

    for module in model.modules():
        if isinstance(module, (KANConvBase, BottleneckKANConvBase)):
            module.register_forward_hook(count)
    grads = []
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        model.zero_grad()
        calls["n"] = 0
        torch.manual_seed(1)
        model(x).square().sum().backward()
        grads.append((calls["n"], [p.grad.clone() for p in model.parameters()]))
    (plain_calls, plain_grads), (ckpt_calls, ckpt_grads) = grads
    assert ckpt_calls > plain_calls  # layers really ran again in backward
    for a, b in zip(plain_grads, ckpt_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_contract(name: str) -> None:
    model = tiny(name, num_classes=3).eval()
    assert model.is_segmentation is True
    stride = model.output_stride
    assert isinstance(stride, int) and stride > 1
    with torch.no_grad():
        assert model(torch.randn(1, 3, 2 * stride, stride)).shape == (1, 3, 2 * stride, stride)
        with pytest.raises(ValueError, match=rf"multiples of {stride}\b.*{stride + 8}x{stride}"):
            model(torch.randn(1, 3, stride + 8, stride))


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_base_predicts_masks_and_freezes_the_encoder(name: str) -> None:
    model = tiny(name, num_classes=3).eval()
    assert isinstance(model, KANSegmentationModel)
    x = torch.randn(2, 3, model.output_stride, 2 * model.output_stride)
    masks = model.predict(x)
    with torch.no_grad():
        logits = model(x)
    assert masks.shape == (2, *x.shape[-2:]) and masks.dtype == torch.int64 and not masks.requires_grad
    assert torch.equal(masks, logits.argmax(1))
    encoder = {id(p) for p in model.encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder]
    assert encoder and rest
    model.freeze_encoder()
    model.train()
    model(x).square().mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in model.encoder.parameters())
    assert all(p.requires_grad and p.grad is not None for p in rest)
    model.freeze_encoder(False)
    assert all(p.requires_grad for p in model.parameters())


def test_binary_segmentation_predicts_where_the_single_logit_is_positive() -> None:
    model = tiny("u2kanet_small", num_classes=1).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.head.bias -= model(x).median()  # about half of the pixels on each side of 0
        logits = model(x)
    masks = model.predict(x)
    assert masks.shape == (2, 32, 32) and set(masks.unique().tolist()) == {0, 1}
    assert torch.equal(masks, (logits[:, 0] > 0).long())


def test_segmentation_models_refuse_no_classes() -> None:
    for name in ("ukanet_18", "u2kanet_small"):
        with pytest.raises(ValueError, match="num_classes must be >= 1 for a segmentation model"):
            tiny(name, num_classes=0)


@pytest.mark.parametrize("conv", conv_names())
def test_every_conv_family_builds_and_runs(conv: str) -> None:
    model = kanzoo.create_model("reskanet_18", conv=conv, width=0.125, num_classes=3).eval()
    kan_layers = [m for m in model.modules() if isinstance(m, (KANConvBase, BottleneckKANConvBase))]
    family = kanzoo.layers.get_conv(conv, 2)
    assert type(model.layer1[0].conv1) is family
    assert len(kan_layers) > 10
    with torch.no_grad():
        out = model(torch.randn(2, 3, SIZE, SIZE))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_family_kwargs_groups_and_errors() -> None:
    model = kanzoo.create_model("reskanet_18", width=0.25, degree=2, groups=4, num_classes=3)
    assert model.layer2[0].conv1.degree == 2 and model.conv1.degree == 2
    assert model.layer2[0].conv1.groups == 4 and model.conv1.groups == 1
    assert model(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 3)
    depthwise = kanzoo.create_model("densekanet_121", width=0.125, groups="depthwise", conv_kwargs=dict(degree=1))
    conv2 = depthwise.features.denseblock1.denselayer1.conv2
    assert conv2.groups == conv2.out_channels and conv2.degree == 1
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['grid_size'\].*conv='kagn'.*degree"):
        kanzoo.create_model("reskanet_18", grid_size=4)
    with pytest.raises(TypeError, match=r"set by the architecture"):
        kanzoo.create_model("reskanet_18", kernel_size=5)
    with pytest.raises(ValueError, match=r"unknown KAN conv family 'nope'"):
        kanzoo.create_model("densekanet_121", conv="nope")
    with pytest.raises(ValueError, match=r"needs num_classes=0"):
        kanzoo.create_model("reskanet_18", width=0.125, global_pool="")
    with pytest.raises(ValueError, match=r"width must be positive"):
        kanzoo.create_model("u2kanet_small", width=0)


def test_bottleneck_family_uses_a_plain_stem() -> None:
    model = kanzoo.create_model("reskanet_50", conv="bottleneck_kacn", width=0.125)
    assert type(model.conv1) is kanzoo.layers.get_conv("kacn", 2)
    assert type(model.layer1[0].conv2) is kanzoo.layers.get_conv("bottleneck_kacn", 2)


def test_ukanet_on_other_encoders() -> None:
    model = kanzoo.create_model("ukanet", encoder="densekanet_121", width=0.125, num_classes=2).eval()
    assert model.output_stride == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 32)).shape == (1, 2, 64, 32)
    vgg = kanzoo.create_model("ukanet", encoder_kwargs=dict(width_multiplier=1), conv="kacn")
    assert type(vgg.decoder[0].conv1) is kanzoo.layers.get_conv("kacn", 2)
    assert type(vgg.encoder.features_0) is kanzoo.layers.get_conv("kacn", 2)  # shared args reach the encoder
    with pytest.raises(ValueError, match=r"decoder_channels needs 5 widths"):
        kanzoo.create_model("ukanet_18", width=0.125, decoder_channels=(8, 8))
    with pytest.raises(ValueError, match=r"unknown kanzoo model 'resnet18'"):
        kanzoo.create_model("ukanet", encoder="resnet18")


# one entry per family with its shallowest layout (compile time grows with depth); no dropout, so that
# compiled and eager training steps can be compared
_SHALLOW: dict[str, dict[str, Any]] = {
    "reskanet": dict(layers=(1, 1, 1, 1)),
    "densekanet": dict(block_config=(1, 1, 1, 1)),
    "vggkan": dict(cfg=[8, "M", 8, "M", 8, "M", 8, "M", 8, "M", 8], drop_rate=0.0, conv_drop_rate=0.0),
    "ukanet": dict(encoder="reskanet_18", encoder_kwargs=dict(layers=(1, 1, 1, 1))),
    "u2kanet": dict(stages=([(3, False, 4, 8), (3, True, 4, 8)], [(3, True, 4, 8)])),
}
COMPILE_ENTRIES = sorted({next(n for n in MODELS if n.split("_")[0] == family)
                          for family in {n.split("_")[0] for n in MODELS}})


def shallow(name: str, **kwargs: Any) -> nn.Module:
    return tiny(name, **{**_SHALLOW.get(name.split("_")[0], {}), **kwargs})


@pytest.mark.parametrize("name", COMPILE_ENTRIES)
def test_torch_compile_fullgraph_training_step(name: str) -> None:
    """One graph without breaks (dynamo + AOT autograd); outputs and gradients match eager mode."""
    eager = shallow(name, num_classes=3).train()
    compiled_model = shallow(name, num_classes=3).train()
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    results = []
    for model in (eager, compiled):
        out = model(x)
        out.square().mean().backward()
        results.append(out.detach())
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-5)
    for (pname, a), b in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=lambda m: f"{pname}: {m}")


@pytest.mark.slow
def test_torch_compile_inductor() -> None:
    model = shallow("reskanet_18", num_classes=3).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_kanzoo_list_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from kanzoo.cli import main
    from kanzoo.cli.models import model_stats

    assert main(["list", "reskanet_1*"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {"reskanet_18", "reskanet_101", "reskanet_152"}
    params = sum(p.numel() for p in kanzoo.create_model("reskanet_18").parameters())
    assert rows["reskanet_18"][1] == f"{params / 1e6:.2f}"
    assert main(["list", "vggkan_11", "--markdown"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| model | params (M) | GFLOPs") and re.match(r"\| vggkan_11 \| 7\.25 \|", table[2])
    assert main(["list", "no_such_model*"]) == 1
    assert capsys.readouterr().err.startswith("error: no kanzoo entries match")


@pytest.mark.parametrize("name", ["vggkan_11", "ukanet_18"])
def test_gflops_count_every_conv_over_expanded_channels(name: str) -> None:
    """``kanzoo list``'s GFLOPs equal 2 x (output elements x fused weight fan-in) summed over convs and linears."""
    from kanzoo.cli.models import model_stats

    with torch.device("meta"):
        model = kanzoo.create_model(name).eval()
    macs = []

    def count(module: nn.Module, _: Any, out: torch.Tensor) -> None:
        macs.append(out.numel() * module.weight[0].numel())

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, KANConvBase)):
            module.register_forward_hook(count)
    with torch.no_grad():
        model(torch.empty(1, *model.pretrained_cfg["input_size"], device="meta"))
    stats = model_stats(name)
    assert stats.gflops == pytest.approx(2 * sum(macs) / 1e9, rel=1e-6)
    assert stats.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["ukanet_18", "u2kanet_small", "u2kanet"])
def test_segmentation_models_save_and_reload(name: str, tmp_path) -> None:
    """save_pretrained writes what timm's config needs (num_features included) and the folder rebuilds the model."""
    model = tiny(name, num_classes=2).eval()
    folder = kanzoo.save_pretrained(model, tmp_path / name)
    again = kanzoo.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
