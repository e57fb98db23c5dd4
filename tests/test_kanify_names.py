"""``kanify:`` names: small timm CNNs of every kind built, trained, cut into features, saved and rebuilt exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import kanzoo
from kanzoo.hub import ModelConfigError
from kanzoo.layers import KANConvBase

pytestmark = pytest.mark.usefixtures("single_thread")

# plain (ResNet), grouped (ResNeXt, RegNet), depthwise with squeeze-excite (MobileNetV3, EfficientNet),
# layer-norm with depthwise (ConvNeXt) and densely connected (DenseNet) CNNs, each with a filter
SMOKE = [("resnet10t", "all"), ("resnext26ts", "spatial"), ("regnetx_002", "all"),
         ("mobilenetv3_small_050", "depthwise"), ("efficientnet_b0", "no_stem"), ("convnext_atto", "no_stem"),
         ("densenet121", "all")]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def perturb(model: nn.Module) -> None:
    """Move every parameter (the zero basis weights too), so that a reload has to restore each of them."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("source, kind", SMOKE)
def test_kanify_name_builds_trains_extracts_and_reloads(source: str, kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cnn = timm.create_model(source, num_classes=3).eval()
    torch.manual_seed(0)
    model = kanzoo.create_model(f"kanify:{source}", num_classes=3, filter=kind, degree=1).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(model(x), cnn(x)) < 1e-5  # timm's initialisation, then an exact conversion
    record = model.kanify_record
    assert record.converted and record.filter == kind and record.family_kwargs == {"degree": 1}
    model.train()(x).square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())

    torch.manual_seed(0)
    features = kanzoo.create_model(f"kanify:{source}", features_only=True, filter=kind, degree=1).eval()
    torch.manual_seed(0)
    cnn_features = timm.create_model(source, features_only=True).eval()
    with torch.no_grad():
        maps, expected = features(x), cnn_features(x)
    assert len(maps) == len(expected) == len(features.feature_info) >= 4
    assert all(relative_error(a, b) < 1e-5 for a, b in zip(maps, expected))
    if kind == "no_stem":  # a features_only extractor may rename the stem (convnext: stem.0 -> stem_0)
        stem = next(module for module in features.modules() if isinstance(module, (nn.Conv2d, KANConvBase)))
        assert not isinstance(stem, KANConvBase) and features.kanify_record.converted

    perturb(model)
    folder = kanzoo.save_pretrained(model.eval(), tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "kanify" and config["num_classes"] == 3
    assert config["model_args"]["source"] == source and config["model_args"]["filter"] == kind
    assert config["model_args"]["converted"] == record.converted and config["model_args"]["degree"] == 1
    reloaded = kanzoo.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
    assert reloaded.kanify_record.converted == record.converted and reloaded.pretrained_cfg["architecture"] == source


def test_a_custom_filter_is_saved_as_the_converted_names(tmp_path: Path) -> None:
    model = kanzoo.create_model("kanify:resnet10t", num_classes=2, conv="kacn", degree=2,
                                filter=lambda name, module: name.startswith("layer2")).eval()
    assert model.kanify_record.converted == ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.1"]
    perturb(model)
    folder = kanzoo.save_pretrained(model, tmp_path / "custom")
    args = json.loads((folder / "config.json").read_text())["model_args"]
    assert "filter" not in args and args["converted"] == model.kanify_record.converted and args["conv"] == "kacn"
    x = torch.randn(1, 3, 32, 32)
    for build in (kanzoo.create_model, timm.create_model):  # timm rebuilds it too, after `import kanzoo`
        rebuilt = build(f"local-dir:{folder}", pretrained=True).eval()
        assert rebuilt.kanify_record.filter == "custom"
        assert [n for n, m in rebuilt.named_modules() if isinstance(m, KANConvBase)] == model.kanify_record.converted
        with torch.no_grad():
            assert torch.equal(rebuilt(x), model(x))


def test_a_saved_model_rebuilds_with_another_head_input_or_as_features(tmp_path: Path) -> None:
    model = kanzoo.create_model("kanify:convnext_atto", num_classes=5, degree=1).eval()
    perturb(model)
    folder = kanzoo.save_pretrained(model, tmp_path / "convnext")
    x = torch.randn(1, 3, 64, 64)
    other = kanzoo.create_model(f"local-dir:{folder}", pretrained=True, num_classes=2).eval()
    assert other.get_classifier().out_features == 2
    gray = kanzoo.create_model(f"local-dir:{folder}", pretrained=True, in_chans=1).eval()
    features = kanzoo.create_model(f"local-dir:{folder}", pretrained=True, features_only=True).eval()
    with torch.no_grad():
        assert torch.equal(other.forward_features(x), model.forward_features(x))
        gray_input = x.mean(1, keepdim=True)  # the adapted RGB stem sees a gray image as its replication
        assert relative_error(gray(gray_input), model(gray_input.expand(-1, 3, -1, -1))) < 1e-5
        expected = model.forward_intermediates(x, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(features(x), expected))  # stages_0 <- stages.0 keys


def test_a_recipe_that_does_not_fit_or_names_files_is_refused(tmp_path: Path) -> None:
    model = kanzoo.create_model("kanify:regnetx_002", num_classes=2, degree=1)
    folder = kanzoo.save_pretrained(model, tmp_path / "regnet")
    config_path = folder / "config.json"
    saved = config_path.read_text()

    def write(**changes: object) -> None:
        config = json.loads(saved)
        config["model_args"].update(changes)
        config_path.write_text(json.dumps(config))

    write(converted=[*model.kanify_record.converted, "s9.b1.conv1"])
    with pytest.raises(ValueError, match=r"converts 1 convolution\(s\) that regnetx_002 as built does not have.*s9"):
        kanzoo.create_model(f"local-dir:{folder}", pretrained=True)
    for key, value, problem in (("checkpoint_path", "/tmp/cnn.safetensors", "set checkpoint_path, which load"),
                                ("source", "hf-hub:someone/else", r"name another model source or a path \(source\)")):
        write(**{key: value})
        for build in (kanzoo.create_model, timm.create_model):  # timm's path is checked by the entry point
            with pytest.raises(ModelConfigError, match=f"says more than an architecture: model_args {problem}"):
                build(f"local-dir:{folder}", pretrained=True)


def test_unknown_names_tags_and_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"unknown timm architecture 'resnt18'; did you mean 'resnet18'"):
        kanzoo.create_model("kanify:resnt18")
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'nope' for resnet18; its tags: a1_in1k"):
        kanzoo.create_model("kanify:resnet18.nope")
    with pytest.raises(ValueError, match="'hf-hub:org/cnn' is not a timm architecture name"):
        kanzoo.create_model("kanify:hf-hub:org/cnn")
    with pytest.raises(TypeError, match=r"resnet10t: .*'width'; a kanify: name takes conv=, filter=, the arguments "
                                        r"of conv='kagn' \(degree, dropout, recompute\)"):
        kanzoo.create_model("kanify:resnet10t", width=0.5)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['degree'\] for conv='kan'"):
        kanzoo.create_model("kanify:resnet10t", conv="kan", conv_kwargs=dict(degree=3))
    with pytest.raises(ValueError, match=r"timm model: build it with timm.create_model, or .*'kanify:resnet18'"):
        kanzoo.create_model("resnet18")
    assert kanzoo.is_model("kanify:resnet18") and not kanzoo.is_model("kanify:resnt18")
    assert "kanify" in timm.list_models() and "kanify" not in kanzoo.list_models()


def test_grid_families_and_conv_kwargs_reach_every_converted_conv() -> None:
    torch.manual_seed(0)
    cnn = timm.create_model("regnetx_002", num_classes=4).eval()
    torch.manual_seed(0)
    model = kanzoo.create_model("kanify:regnetx_002", num_classes=4, conv="fastkan", conv_kwargs=dict(grid_size=3),
                                drop_rate=0.1).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(model(x), cnn(x)) < 1e-5
    assert model.kanify_record.family_kwargs == {"grid_size": 3} and model.drop_rate == 0.1


def test_ukanet_on_a_kanified_encoder_trains_and_reloads(tmp_path: Path) -> None:
    seg = kanzoo.create_model("ukanet", encoder="kanify:resnet10t", num_classes=2, degree=1).eval()
    assert all(isinstance(seg.encoder.get_submodule(name), KANConvBase) for name in seg.encoder.kanify_record.converted)
    x = torch.randn(1, 3, 64, 64)
    seg.train()(x).square().mean().backward()
    perturb(seg)
    folder = kanzoo.save_pretrained(seg.eval(), tmp_path / "seg")
    reloaded = kanzoo.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), seg(x))
