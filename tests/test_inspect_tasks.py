"""``kanzoo inspect``, ``kanzoo prune`` and ``--kan-l1`` end to end on tiny data, and their errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import kanzoo
from kanzoo.cli import main as cli_main
from kanzoo.inspect import Pruner, collect_statistics, kan_layers
from kanzoo.tasks import TaskError, evaluate, export_model, finetune
from kanzoo.tasks.modeling import save_task_model, set_task_cfg
from kanzoo.tasks.pruning import _Search, prune
from kanzoo.tasks.synthetic import make_classification_folder

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES = ("checkerboard", "dots", "vertical_stripes")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_classification_folder(tmp_path_factory.mktemp("inspect") / "data", train_per_class=6, val_per_class=3,
                                      size=32, patterns=CLASSES, colour_coded=True, seed=0)


def _save(model: torch.nn.Module, folder: Path) -> Path:
    """As fine-tuning saves a model: with its class names and input size."""
    set_task_cfg(model, classes=sorted(CLASSES), input_size=(3, 32, 32))
    return save_task_model(model, folder)


@pytest.fixture(scope="module")
def kan_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = kanzoo.create_model("reskanet_18", width=0.125, num_classes=3, conv="kacn", degree=2)
    return _save(model, tmp_path_factory.mktemp("kan_model") / "model")


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory) -> Path:
    """A model whose KAN convs are linear by construction (a kanified CNN)."""
    torch.manual_seed(0)
    model = kanzoo.create_model("kanify:test_resnet", num_classes=3, conv="kagn", degree=2)
    return _save(model, tmp_path_factory.mktemp("linear_model") / "model")


def test_inspect_command_writes_the_table_the_pictures_and_the_report(kan_model, data, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli_main(["inspect", str(kan_model), "--data", str(data), "--out", str(out), "--samples", "6",
                     "--layers", "layer1.*", "--top", "3", "--no-progress"]) == 0
    assert "inspected 4 KAN convolutions" in capsys.readouterr().out
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["layer"] for row in rows] == ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"]
    assert {"layer", "family", "in_channels", "out_channels", "groups", "nonlinearity", "outside_domain_fraction",
            "input_p01", "input_p99"} <= set(rows[0])
    assert all(row["family"] == "kacn" and 0 <= float(row["nonlinearity"]) <= 1 for row in rows)
    assert all(float(row["input_p01"]) <= float(row["input_p99"]) for row in rows)
    assert sorted(p.name for p in (out / "layers").iterdir()) == [Path(row["plot"]).name for row in rows]
    assert (out / "report.md").read_text().count("![layer1.") == 4
    # a second run needs --overwrite
    assert cli_main(["inspect", str(kan_model), "--data", str(data), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--layers", "head*"], "no KAN convolution matches --layers 'head*'"),
    (["--samples", "0"], "--samples must be at least 1"),
    (["--top", "0"], "--top must be at least 1"),
])
def test_inspect_errors_are_one_line(kan_model, data, tmp_path, capsys, args, message):
    assert cli_main(["inspect", str(kan_model), "--data", str(data), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_inspect_needs_weights_and_data(kan_model, data, tmp_path, capsys):
    assert cli_main(["inspect", "vggkan_13", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "has no pretrained weights" in capsys.readouterr().err
    assert cli_main(["inspect", str(kan_model), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "error: data folder" in capsys.readouterr().err


def test_pruning_a_linear_model_makes_plain_convs_with_the_same_predictions(linear_model, data, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert cli_main(["prune", str(linear_model), "--data", str(data), "--out", str(out), "--samples", "6",
                     "--img-size", "32", "--max-drop", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "plain" in printed and "parameters" in printed and "GFLOPs" in printed and "forward ms" in printed
    summary = json.loads((out / "pruning.json").read_text())
    original = kanzoo.create_model(f"local-dir:{linear_model}", pretrained=True).eval()
    assert len(summary["layers"]) == len(kan_layers(original))
    assert {layer["kind"] for layer in summary["layers"]} == {"plain"}
    assert summary["after"]["top1"] == summary["before"]["top1"]
    assert summary["after"]["params"] < summary["before"]["params"]
    assert summary["after"]["gflops"] < summary["before"]["gflops"]
    assert summary["before"]["forward_ms"] > 0 and summary["after"]["forward_ms"] > 0
    pruned = kanzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert not kan_layers(pruned)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), original(x), atol=1e-5, rtol=1e-4)
    assert evaluate(str(out), data, img_size=32, progress=False)["top1"] == pytest.approx(summary["after"]["top1"])
    report = export_model(str(out), tmp_path / "pruned.pt2", format="exported-program", img_size=32)
    assert report.max_abs_diff < 1e-4


def test_pruning_a_kan_model_reloads_and_keeps_the_metric(kan_model, data, tmp_path):
    report = prune(str(kan_model), data, tmp_path / "out", max_drop=0.34, samples=6, batch_size=8, progress=False)
    assert report.before - report.after <= 0.34
    assert report.plans and report.cost_after.params < report.cost_before.params
    reloaded = kanzoo.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True)
    assert sum(p.numel() for p in reloaded.parameters()) == report.cost_after.params
    assert json.loads((tmp_path / "out" / "config.json").read_text())["label_names"] == sorted(CLASSES)


def test_the_search_stops_at_max_drop(kan_model, data):
    model = kanzoo.create_model(f"local-dir:{kan_model}", pretrained=True).eval()
    pruner = Pruner(model, collect_statistics(model, [torch.randn(4, 3, 32, 32)], samples_per_channel=64))
    full = sum(p.numel() for p in model.parameters())

    def evaluate_by_size(net: torch.nn.Module) -> float:  # the metric falls with the parameters removed
        return sum(p.numel() for p in net.parameters()) / full

    search = _Search(pruner, evaluate_by_size, 1.0, 0.1, "score")
    search.run([0.01, 0.1, 1.0], progress=False)
    assert search.plans and 1.0 - search.score <= 0.1
    assert any(1.0 - step["score"] > 0.1 for step in search.tried)  # it tried more and refused it
    assert all(step["score"] == pytest.approx(step["params"] / full) for step in search.tried)


def test_prune_errors(kan_model, data, tmp_path, capsys):
    for args, message in ((["--max-drop", "1.5"], "--max-drop must be a fraction"),
                          (["--samples", "0"], "--samples must be at least 1")):
        assert cli_main(["prune", str(kan_model), "--data", str(data), "--out", str(tmp_path / "o"), *args]) == 2
        assert message in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(TaskError, match="is not empty"):
        prune(str(kan_model), data, busy)
    assert (busy / "notes.txt").read_text() == "mine"


def test_finetune_with_kan_l1_logs_the_regularisation(data, tmp_path, capsys):
    out = tmp_path / "run"
    finetune("reskanet_18", data, out, epochs=2, batch_size=8, img_size=32, pretrained=False, workers=0,
             progress=False, model_kwargs={"width": 0.125}, kan_l1=0.01, kan_entropy=0.1)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["epoch", "train_loss", "train_kan_l1", "train_kan_entropy"]
    l1 = [float(row["train_kan_l1"]) for row in rows]
    assert all(value > 0 for value in l1) and l1[1] < l1[0]  # the basis weights shrink
    assert float(rows[0]["train_kan_entropy"]) > 0
    common = dict(batch_size=8, img_size=32, pretrained=False, workers=0, progress=False,
                  model_kwargs={"width": 0.125}, resume=True)
    with pytest.raises(TaskError, match="used kan_l1=0.01 but this command asks for 0.02"):
        finetune("reskanet_18", data, out, epochs=3, kan_l1=0.02, kan_entropy=0.1, **common)
    finetune("reskanet_18", data, out, epochs=3, kan_l1=0.01, kan_entropy=0.1, **common)
    finetune("reskanet_18", data, out, epochs=4, **common)  # left out: the run's values
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    assert float(rows[3]["train_kan_l1"]) < float(rows[2]["train_kan_l1"]) < l1[1]
    assert torch.load(out / "last.pt", weights_only=True)["run_info"]["kan_entropy"] == 0.1
    tiny = ["--model", "reskanet_18", "--model-arg", "width=0.125"]
    for args, message in ((tiny + ["--kan-entropy", "1"], "give --kan-l1 too"),
                          (tiny + ["--kan-l1", "-1"], "--kan-l1 must be"),
                          (["--model", "resnet18", "--kan-l1", "0.1"], "ResNet has none")):
        command = ["finetune", "--data", str(data), "--out", str(tmp_path / "o"), "--no-pretrained", *args]
        assert cli_main(command) == 2
        err = capsys.readouterr().err
        assert message in err, err


def test_segment_with_kan_l1_logs_the_regularisation(tmp_path):
    from kanzoo.tasks import segment
    from kanzoo.tasks.synthetic import make_segmentation_folder

    masks = make_segmentation_folder(tmp_path / "masks", train=4, val=2, size=32)
    segment("ukanet_18", masks, tmp_path / "run", epochs=1, batch_size=4, img_size=32, pretrained=False,
            pretrained_encoder=False, workers=0, overlays=0, progress=False, model_kwargs={"width": 0.125},
            kan_l1=0.01)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["train_kan_l1"]) > 0 and float(row["train_kan_entropy"]) > 0
