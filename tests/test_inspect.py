"""``kanzoo.inspect``: edge functions, statistics, the report, the regularisation and pruning (library level).

References are independent of the code under test: the bases come from ``test_layers_reference`` (textbook
definitions), nonlinearities from least-squares fits of the sampled edge functions with numpy.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

import kanzoo
from kanzoo.inspect import (Pruner, analyze, channel_functions, collect_statistics, edge_function, edge_functions,
                            inside_domain, inspect_model, kan_layers, kan_regularization, prune_model)
from kanzoo.inspect.regularization import KANRegularizer
from kanzoo.layers import KANConvBase
from kanzoo.layers.partial import PartialKANConv
from kanzoo.models import apply_pruning
from test_layers import FAMILY_NAMES, SMALL_KWARGS, kan_layer, randomise_basis_parameters
from test_layers_reference import channel_bases

pytestmark = pytest.mark.usefixtures("single_thread")

PLAIN = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
KERNELS = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}


def _kanified(family: str, nd: int, groups: int = 1) -> KANConvBase:
    conv = PLAIN[nd](4, 6, KERNELS[nd], padding=1, groups=groups, dtype=torch.float64)
    return kanzoo.kanify(conv, family, **SMALL_KWARGS[family])


def _statistics(layer: nn.Module, nd: int, batches: int = 2, scale: float = 1.0, **kwargs):
    generator = torch.Generator().manual_seed(1)
    data = [scale * torch.randn(3, layer.in_channels, *([6] * nd), dtype=torch.float64, generator=generator)
            for _ in range(batches)]
    return collect_statistics(nn.Sequential(layer), data, **kwargs)["0"]


# ------------------------------------------------------------------------------------------------ edge functions

@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_layer_made_from_a_plain_conv_is_linear(family: str, nd: int) -> None:
    layer = _kanified(family, nd, groups=2)
    t = torch.linspace(-3, 3, 41, dtype=torch.float64)
    phi = edge_functions(layer, t)
    assert phi.shape == (6, 2, *KERNELS[nd], 41)
    torch.testing.assert_close(phi, layer.base_weight.detach().unsqueeze(-1) * t, atol=1e-12, rtol=0)
    torch.testing.assert_close(channel_functions(layer, t),
                               layer.base_weight.detach().flatten(2).sum(-1, keepdim=True) * t, atol=1e-12, rtol=0)
    analysis = analyze(_statistics(layer, nd))
    assert analysis.nonlinearity < 1e-12 and float(analysis.edge_nonlinearity.max()) < 1e-12


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_one_active_basis_gives_that_basis_back(family: str, nd: int) -> None:
    layer = kan_layer(family, nd, in_channels=4, out_channels=6, kernel_size=KERNELS[nd], groups=2)
    randomise_basis_parameters(layer)
    output, local, basis, tap = 4, 1, layer.num_bases // 2, tuple(k - 1 for k in KERNELS[nd])
    channel = 2 + local  # output 4 is in group 1, which reads input channels 2 and 3
    with torch.no_grad():
        layer.weight.zero_()
        layer.basis_weight[(output, local, basis, *tap)] = 1.0
    t = torch.linspace(-2.5, 2.5, 57, dtype=torch.float64)
    phi = edge_functions(layer, t)
    expected = channel_bases(layer, t, channel)[basis]
    torch.testing.assert_close(phi[(output, local, *tap)], expected, atol=1e-10, rtol=1e-10)
    phi[(output, local, *tap)] = 0
    assert float(phi.abs().max()) == 0
    torch.testing.assert_close(edge_function(layer, output, channel, tap, t), expected, atol=1e-10, rtol=1e-10)


def test_edge_functions_take_inputs_per_channel_and_check_shapes() -> None:
    layer = kan_layer("kacn", 2, in_channels=4, out_channels=2)
    inputs = torch.randn(4, 9, dtype=torch.float64)
    phi = edge_functions(layer, inputs)
    for channel in range(4):
        torch.testing.assert_close(phi[:, channel], edge_functions(layer, inputs[channel])[:, channel])
    with pytest.raises(ValueError, match=r"\(in_channels=4, T\)"):
        edge_functions(layer, torch.randn(3, 9))
    with pytest.raises(TypeError, match="floating point"):
        edge_functions(layer, torch.arange(3))
    with pytest.raises(ValueError, match="not in the group of output"):
        edge_function(kan_layer("kacn", 2, in_channels=4, out_channels=4, groups=2), 0, 3, (0, 0), inputs[0])


def test_kan_layers_find_bottleneck_inner_convs_and_match_patterns() -> None:
    model = kanzoo.create_model("reskanet_18", conv="bottleneck_kacn", width=0.125, stem_width=16, num_classes=2)
    names = [name for name, _ in kan_layers(model)]
    assert "conv1" in names and "layer1.0.conv1.kan" in names
    assert [name for name, _ in kan_layers(model, "layer4.*.kan")] == [n for n in names if n.startswith("layer4")]


# ------------------------------------------------------------------------------------------------ statistics

@pytest.mark.parametrize("family, inside", [
    ("kan", lambda x: x.abs() <= 1.0),
    ("fastkan", lambda x: x.abs() <= 2.0),
    ("relukan", lambda x: x.abs() <= 1.0),
    ("kacn", lambda x: x.abs() <= math.atanh(0.99)),
    ("kagn", lambda x: x.abs() <= math.atanh(0.99)),
    ("kabn", lambda x: x.abs() <= math.log(0.99 / 0.01)),
])
def test_outside_domain_fraction(family: str, inside) -> None:
    layer = kan_layer(family, 1, in_channels=2, out_channels=2, kernel_size=1)
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64).view(1, 1, -1).expand(2, 2, -1).contiguous()
    stats = collect_statistics(nn.Sequential(layer), [x[:1], x[1:]])["0"]
    expected = 1 - float(inside(x).double().mean())
    assert stats.outside_domain_fraction == pytest.approx(expected, abs=1e-12) and 0.05 < expected < 0.9
    assert stats.count == 2 * 1201


def test_wavelet_domain_is_within_three_scales_of_a_wavelet() -> None:
    layer = kan_layer("wavkan", 1, in_channels=1, out_channels=1, kernel_size=1)
    with torch.no_grad():
        layer.shift.copy_(torch.tensor([[-3.0, 4.0]]))
        layer.scale.copy_(torch.tensor([[0.5, -1.0]]))
    x = torch.tensor([[[-4.6, -4.4, -1.6, -1.4, 0.9, 1.1, 6.9, 7.1]]], dtype=torch.float64)
    assert inside_domain(layer, x).flatten().tolist() == [False, True, True, False, False, True, True, False]


def test_samples_are_bounded_and_percentiles_come_from_them() -> None:
    layer = kan_layer("kagn", 2, in_channels=3, out_channels=2)
    stats = _statistics(layer, 2, batches=3, samples_per_channel=50)
    assert stats.samples.shape == (3, 50) and stats.count == 3 * 3 * 36
    assert stats.minimum <= float(stats.samples.min()) and float(stats.samples.max()) <= stats.maximum
    assert stats.percentile(1) == pytest.approx(float(np.percentile(stats.samples.numpy(), 1)), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        collect_statistics(nn.Sequential(layer), [], samples_per_channel=1)
    with pytest.raises(ValueError, match="matches 'nothing'"):
        collect_statistics(nn.Sequential(layer), [], layers="nothing")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_nonlinearity_and_strongest_edges_match_least_squares_fits(family: str) -> None:
    layer = kan_layer(family, 2, in_channels=4, out_channels=4, groups=2)
    randomise_basis_parameters(layer)
    stats = _statistics(layer, 2, scale=1.5)
    analysis = analyze(stats, top=5)
    phi = edge_functions(layer, stats.samples.double()).numpy()  # (O, C/g, kh, kw, S), each edge on its channel
    group_channels = np.arange(4).reshape(2, 2)
    variances, residuals = [], []
    for o in range(4):
        for c in range(2):
            t = stats.samples[group_channels[o // 2, c]].double().numpy()
            for tap in np.ndindex(3, 3):
                y = phi[(o, c, *tap)]
                slope, intercept = np.polyfit(t, y, 1)
                variances.append(y.var())
                residuals.append(((y - slope * t - intercept) ** 2).mean())
    assert analysis.nonlinearity == pytest.approx(sum(residuals) / sum(variances), rel=1e-6)
    order = np.argsort(variances)[::-1][:5]
    assert [e.std for e in analysis.strongest] == pytest.approx(np.sqrt(np.asarray(variances)[order]).tolist(),
                                                                rel=1e-6)
    best = analysis.strongest[0]
    assert best.channel // 2 == best.output // 2  # the edge's input channel is in its output's group


def test_report_has_a_table_a_picture_per_layer_and_a_page(tmp_path) -> None:
    model = kanzoo.create_model("reskanet_18", width=0.125, num_classes=2, conv="kabn").eval()
    batches = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    analyses = inspect_model(model, batches, tmp_path, layers="layer4.*", top=2, title="tiny")
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["layer"] for row in rows] == [a.name for a in analyses] == [n for n, _ in kan_layers(model, "layer4.*")]
    for column in ("layer", "family", "in_channels", "out_channels", "groups", "nonlinearity",
                   "outside_domain_fraction", "input_p01", "input_p99"):
        assert rows[0][column] != ""
    assert all(0 <= float(row["nonlinearity"]) <= 1 for row in rows)
    report = (tmp_path / "report.md").read_text()
    for row in rows:
        assert (tmp_path / row["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({row['plot']})" in report
    assert "over 4 inputs" in report


# ------------------------------------------------------------------------------------------------ regularisation

def test_regularisation_terms_follow_their_definition() -> None:
    model = nn.Sequential(kan_layer("kacn", 2, in_channels=2, out_channels=3),
                          kan_layer("kan", 2, in_channels=3, out_channels=2))
    l1, entropy = kan_regularization(model)
    expected_l1, expected_entropy = 0.0, 0.0
    for layer in model:
        m = layer.basis_weight.detach().abs().mean(dim=(2, 3, 4))
        expected_l1 += float(m.sum())
        p = m / m.sum()
        expected_entropy += float(-(p * p.log()).sum())
    assert float(l1.detach()) == pytest.approx(expected_l1)
    assert float(entropy.detach()) == pytest.approx(expected_entropy)
    penalty, values = KANRegularizer(0.5, 2.0)(model)
    assert float(penalty.detach()) == pytest.approx(0.5 * (expected_l1 + 2.0 * expected_entropy))
    assert values == pytest.approx({"kan_l1": expected_l1, "kan_entropy": expected_entropy})
    penalty.backward()
    for layer in model:  # the base branch is not penalised
        grad = layer.weight.grad.view(layer.out_channels, layer.in_channels, layer.num_responses, -1)
        assert float(grad[:, :, 0].abs().max()) == 0 and float(grad[:, :, 1:].abs().min()) > 0


def test_regularisation_settings_are_checked() -> None:
    for l1, entropy, message in ((-1, 0, "l1 must be"), (float("nan"), 0, "l1 must be"), (0, 1, "give l1 > 0")):
        with pytest.raises(ValueError, match=message):
            KANRegularizer(l1, entropy)
    zero, _ = kan_regularization(nn.Conv2d(2, 2, 1))
    assert float(zero) == 0


# ------------------------------------------------------------------------------------------------ pruning

def test_pruning_a_linear_model_removes_every_kan_conv_without_changing_its_output() -> None:
    torch.manual_seed(0)
    cnn = timm.create_model("test_resnet", num_classes=3).eval()
    model = kanzoo.kanify(timm.create_model("test_resnet", num_classes=3).eval(), "kagn", degree=2)
    model.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 48, 48)
    statistics = collect_statistics(model, [torch.randn(4, 3, 48, 48)])
    pruned, plans = prune_model(model, statistics, tolerance=0.0)
    assert len(plans) == len(kan_layers(model)) and {plan.kind for plan in plans} == {"plain"}
    assert not kan_layers(pruned)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), model(x), atol=1e-5, rtol=1e-4)
    biases = sum(layer.out_channels for _, layer in kan_layers(model) if layer.bias is None)
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in cnn.parameters()) + biases


def _mixed_model(conv: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return kanzoo.create_model("reskanet_18", width=0.125, num_classes=3, conv=conv, groups=2,
                               **kwargs).eval()


@pytest.mark.parametrize("conv, kwargs", [("kagn", {}), ("kan", dict(grid_size=3, spline_order=2)),
                                          ("wavkan", dict(num_wavelets=3)), ("bottleneck_kacn", {})])
def test_pruned_models_reload_with_the_same_outputs(conv: str, kwargs: dict, tmp_path) -> None:
    model = _mixed_model(conv, **kwargs)
    statistics = collect_statistics(model, [torch.randn(4, 3, 32, 32)], samples_per_channel=128)
    pruner = Pruner(model, statistics)
    kinds = set()
    for tolerance in (0.02, 0.3):
        plans = pruner.plan(tolerance)
        kinds |= {plan.kind for plan in plans}
        pruned = pruner.apply(plans)
        assert all(plan.error <= tolerance + 1e-9 and plan.params_after < plan.params_before for plan in plans)
    assert {"plain", "partial"} <= kinds
    kanzoo.save_pretrained(pruned, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "kanzoo_pruned" and config["model_args"]["pruned_from"] == "reskanet_18"
    reloaded = kanzoo.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), pruned.eval()(x), atol=0, rtol=0)
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in model.parameters())
    again = tmp_path / "again"
    kanzoo.save_pretrained(reloaded, again)
    assert json.loads((again / "config.json").read_text())["model_args"] == config["model_args"]


def test_a_pruned_kanified_model_and_a_second_stage_reload(tmp_path) -> None:
    torch.manual_seed(0)
    model = kanzoo.create_model("kanify:test_resnet", num_classes=3, conv="kacn", degree=2).eval()
    with torch.no_grad():
        for _, layer in kan_layers(model):
            layer.basis_weight.normal_(std=0.5)
    statistics = collect_statistics(model, [torch.randn(4, 3, 32, 32)], samples_per_channel=64)
    first, _ = prune_model(model, statistics, 0.01)
    assert any(isinstance(module, PartialKANConv) for module in first.modules())
    second, plans = prune_model(first, collect_statistics(first, [torch.randn(4, 3, 32, 32)]), 0.5)
    assert plans and len(second.pruning_record.stages) == 2
    kanzoo.save_pretrained(second, tmp_path)
    args = json.loads((tmp_path / "config.json").read_text())["model_args"]
    assert args["pruned_from"] == "kanify" and args["source"] == "test_resnet"
    reloaded = kanzoo.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), second.eval()(x), atol=0, rtol=0)


def test_pruning_records_are_checked_when_they_are_applied() -> None:
    model = _mixed_model("kacn")
    for stages, message in (
        ([{"layer1.0": {"degree": 1}}], "a BasicKANBlock, not a KAN convolution"),
        ([{"nowhere": {"degree": 1}}], "no module there"),
        ([{"layer1.0.conv1": {"degree": 9}}], "degree=9 cannot replace degree=3"),
        ([{"layer1.0.conv1": {"kan_channels": "0"}}], "list of input channel indices"),
        ([{"layer1.0.conv1": {"kan_channels": [], "linear_activation": "cubic"}}], "must be one of"),
        ([{"layer1.0.conv1": {"linear_activation": "identity"}}], "needs kan_channels"),
        ({"layer1.0.conv1": {"degree": 1}}, "list of objects"),
    ):
        with pytest.raises(ValueError, match=message):
            apply_pruning(model, stages)
    with pytest.raises(ValueError, match="features_only is not available"):
        timm.create_model("kanzoo_pruned", pruned_from="reskanet_18", pruned_layers=[], features_only=True)
    with pytest.raises(ValueError, match="not an architecture"):
        timm.create_model("kanzoo_pruned", pruned_from="kanzoo_pruned", pruned_layers=[])
    with pytest.raises(ValueError, match="no weights of its own"):
        timm.create_model("kanzoo_pruned", pretrained=True, pruned_from="reskanet_18", pruned_layers=[])
    assert "kanzoo_pruned" not in kanzoo.list_models()


def test_a_saved_pruned_config_may_not_point_elsewhere(tmp_path) -> None:
    model = apply_pruning(_mixed_model("kacn"), [{"layer1.0.conv1": {"kan_channels": [0, 5]}}])
    assert isinstance(model.layer1[0].conv1, PartialKANConv)
    kanzoo.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_args"]["pruned_from"] = "/tmp/elsewhere"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(kanzoo.hub.ModelConfigError, match="pruned_from"):
        kanzoo.create_model(f"local-dir:{tmp_path}", pretrained=True)
