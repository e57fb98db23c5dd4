"""The layer benchmark's own machinery: the saved-for-backward counter, the table, the command line."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from kanzoo import bench
from kanzoo.cli import main as cli_main

TINY = bench.LayerShape(batch=2, in_channels=8, out_channels=8, size=6)


def test_saved_bytes_of_conv2d_is_its_input():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    saved = bench.saved_activation_bytes(lambda: conv(x), list(conv.parameters()))
    assert saved == x.numel() * x.element_size()


def test_saved_bytes_counts_each_storage_once_and_skips_parameters():
    w = nn.Parameter(torch.randn(5, 5))
    x = torch.randn(3, 5, requires_grad=True)

    def fn() -> torch.Tensor:
        h = x * x            # saves x (twice: one storage)
        e = torch.exp(h)     # saves its result e (a new 3x5 tensor)
        return e @ w         # saves e again and the parameter w (skipped)

    saved = bench.saved_activation_bytes(fn, [w])
    assert saved == 2 * x.numel() * x.element_size()


def test_saved_bytes_sees_a_stored_expansion():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    weight = torch.randn(5, 6, 1, 1, requires_grad=True)

    def fn() -> torch.Tensor:
        expanded = torch.cat([x, torch.exp(x)], dim=1)  # exp keeps its result (1x), cat keeps nothing
        return F.conv2d(expanded, weight)               # conv keeps the expanded input (2x) and the weight

    assert bench.saved_activation_bytes(fn, [weight]) == 3 * x.numel() * x.element_size()


def test_kanzoo_layers_keep_at_most_three_inputs_for_backward():
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    for family in bench.DEFAULT_FAMILIES:
        layer = bench.make_layer(family, TINY, groups=2, device=torch.device("cpu"))
        saved = bench.saved_activation_bytes(lambda: layer(x), list(layer.parameters()))
        assert saved <= 3 * x.numel() * x.element_size(), family
        layer.recompute = False
        stored = bench.saved_activation_bytes(lambda: layer(x), list(layer.parameters()))
        assert stored > saved, family


def test_interleaved_min_times_runs_cases_in_rounds():
    calls: list[str] = []
    times = bench.interleaved_min_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                        repeats=3, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b"] * 4
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())


def test_cpu_clock_counts_work_not_sleep():
    import time
    times = bench.interleaved_min_times({"sleep": lambda: time.sleep(0.05)}, repeats=1, warmup=0,
                                        device=torch.device("cpu"), clock="cpu")
    assert times["sleep"] < 0.04
    wall = bench.interleaved_min_times({"sleep": lambda: time.sleep(0.05)}, repeats=1, warmup=0,
                                       device=torch.device("cpu"))
    assert wall["sleep"] >= 0.05


def test_bench_layers_rows_on_a_tiny_config():
    rows = list(bench.bench_layers(["kagn", "kan"], ["1", "dw"], TINY, repeats=1, warmup=0, clock="cpu"))
    assert [(r["family"], r["groups"]) for r in rows] == [("kagn", "1"), ("kagn", "dw"), ("kan", "1"), ("kan", "dw")]
    for row in rows:
        assert set(row) == set(bench.COLUMNS)
        assert row["kanzoo_ms"] > 0 and row["conv_ms"] > 0 and row["limit_ms"] > 0
        assert abs(row["vs_limit"] - row["kanzoo_ms"] / row["limit_ms"]) < 1e-9
        assert row["conv_saved_x"] == 1.0
        assert 0 < row["saved_x"] <= 3.0
    assert rows[1]["limit_kind"].split("/")[0] in {"grouped", "dw+sum"}


def test_limit_candidates_compute_the_same_convolution():
    layer = bench.make_layer("kacn", TINY, groups=TINY.in_channels, device=torch.device("cpu"))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expanded = layer.expand(x)
        expected = layer(x)
    forwards = bench.limit_forwards(layer, expanded)
    assert set(forwards) == {"grouped/nchw", "grouped/nhwc", "dw+sum/nchw", "dw+sum/nhwc"}
    for forward in forwards.values():
        y, inputs = forward()
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        assert all(t.requires_grad for t in inputs)


def test_format_table_text_and_markdown():
    row = {"family": "kagn", "groups": "8", "bases": 4, "kanzoo_ms": 12.345, "conv_ms": 1.0, "limit_ms": 10.0,
           "limit_kind": "grouped/nhwc", "vs_limit": 1.2345, "vs_conv": 12.345, "saved_x": 1.0, "conv_saved_x": 1.0}
    text = bench.format_table([row])
    assert text.splitlines()[0].split()[0] == "family" and "1.23" in text and "12.35" in text
    md = bench.format_table([row], markdown=True).splitlines()
    assert md[0].startswith("| family |") and md[1].startswith("|---") and md[2].count("|") == len(bench.COLUMNS) + 1


def test_groups_names_are_validated():
    assert TINY.groups_of("dw") == TINY.in_channels and TINY.groups_of("2") == 2
    for bad in ("3", "0", "x"):
        try:
            TINY.groups_of(bad)
        except ValueError as err:
            assert "groups" in str(err)
        else:
            raise AssertionError(bad)


def test_command_line_prints_machine_and_table(capsys):
    code = bench.main(["layers", "--families", "kabn", "--groups", "dw", "--repeats", "1", "--batch", "2",
                       "--size", "6", "--device", "cpu", "--markdown", "--allocator", "default"])
    out = capsys.readouterr().out
    assert code == 0
    assert "torch " + torch.__version__ in out and "cores" in out
    assert "| kabn | dw | 4 |" in out
    assert "expansion: eager" in out  # the suite runs with the fused kernels off
    assert "malloc as configured" in out


def test_command_line_kernels_option_is_restored_afterwards(capsys):
    from kanzoo.layers import fused_kernels_enabled

    assert not fused_kernels_enabled()
    assert bench.main(["layers", "--families", "kacn", "--groups", "1", "--repeats", "1", "--batch", "1",
                       "--size", "4", "--device", "cpu", "--kernels", "fused", "--allocator", "default"]) == 0
    assert "expansion: fused CPU kernels" in capsys.readouterr().out
    assert not fused_kernels_enabled()


def test_kanzoo_cli_bench_and_bad_arguments(capsys):
    assert cli_main(["bench", "layers", "--families", "nope", "--device", "cpu"]) == 2
    assert "unknown families" in capsys.readouterr().err
    assert cli_main(["bench", "layers", "--groups", "5", "--device", "cpu"]) == 2
    assert "groups=5" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_main(["bench", "layers", "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert cli_main(["bench", "layers", "--threads", "0", "--device", "cpu"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_family_specs_name_the_base_activation():
    assert bench.parse_family("kagn") == ("kagn", "silu") and bench.parse_family("kan:identity") == ("kan", "identity")
    assert "kagn:identity" in bench.DEFAULT_FAMILIES
    layer = bench.make_layer("kagn:identity", TINY, groups=1, device=torch.device("cpu"))
    assert isinstance(layer.base_activation, nn.Identity)
    with pytest.raises(ValueError, match="unknown base activation 'gelu' in 'kagn:gelu'.*silu"):
        bench.check_selection(["kagn:gelu"], ["1"], TINY)


def test_kanify_benchmark_measures_three_variants():
    from kanzoo import bench_kanify

    rows = bench_kanify.bench_kanify("mobilenetv3_small_050", "kacn", batch=2, size=32, repeats=1, warmup=0)
    assert [row["variant"] for row in rows] == ["cnn", "kanify all", "kanify depthwise"]
    cnn, full, partial = rows
    assert cnn["time_x"] == 1.0 and full["params_m"] > partial["params_m"] > cnn["params_m"]
    assert full["gflops"] > partial["gflops"] > cnn["gflops"] > 0
    assert all(row["step_ms"] > 0 for row in rows)
    assert cnn["peak_mb"] is None or all(row["peak_mb"] > 0 for row in rows)
    assert bench_kanify.partial_filter(timm.create_model("resnet10t")) == "spatial"
    assert "| kanify all |" in bench_kanify.format_table(rows, markdown=True)


def test_kanify_benchmark_refuses_bad_arguments(capsys):
    from kanzoo import bench_kanify

    assert bench_kanify.main(["--models", "resnet_nope"]) == 2
    assert "error: unknown timm model(s) ['resnet_nope']" in capsys.readouterr().err
    assert cli_main(["bench", "kanify", "--batch", "0"]) == 2
    assert "error: --batch must be at least 1, got 0" in capsys.readouterr().err
