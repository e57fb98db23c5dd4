"""End-to-end tests of kanzoo.tasks on tiny generated data with tiny registry models.

Fine-tuning: a ResKANet-18 at width 0.125 on a 3-class synthetic pattern set (each class with its own
colour) must reach validation top-1 >= 0.8 in 6 epochs (seed 0; seeds 0-2 reach 1.0). Segmentation: a UKANet-18 at width
0.125 on synthetic discs must reach validation mIoU >= 0.55 in 8 epochs (seeds 0 and 1 reach about
0.7; predicting background everywhere scores about 0.37).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kanzoo
from kanzoo.cli import main as cli_main
from kanzoo.tasks import TaskError, evaluate, export_model, finetune, predict, quickstart, segment
from kanzoo.tasks.classification import CLASSIFICATION_COLUMNS
from kanzoo.tasks.data import discover_classification, discover_segmentation
from kanzoo.tasks.modeling import is_segmentation, label_names
from kanzoo.tasks.segmentation import mask_image, predict_mask
from kanzoo.tasks.runs import RunFolder
from kanzoo.tasks.synthetic import make_classification_folder, make_segmentation_folder

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("checkerboard", "horizontal_stripes", "vertical_stripes")
TINY = {"width": 0.125}
FINETUNE_ARGS = dict(epochs=6, batch_size=8, lr=3e-3, img_size=32, workers=0, seed=0, progress=False,
                     model_kwargs=TINY)
TOP1_THRESHOLD = 0.8
MIOU_THRESHOLD = 0.55


pytestmark = pytest.mark.usefixtures("single_thread")


def _metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _corrupt(folder: Path) -> list[str]:
    """Add an undecodable and a truncated PNG to ``folder``; returns their names."""
    (folder / "zz_garbage.png").write_bytes(b"this is not an image")
    good = (folder / "0000.png").read_bytes()
    (folder / "zz_truncated.png").write_bytes(good[: len(good) // 2])
    return ["zz_garbage.png", "zz_truncated.png"]


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> Path:
    root = make_classification_folder(tmp_path_factory.mktemp("cls") / "data", train_per_class=16, val_per_class=5,
                                      size=32, patterns=tuple(sorted(CLASSES)), colour_coded=True, seed=0)
    _corrupt(root / "train" / "checkerboard")
    return root


@pytest.fixture(scope="module")
def cls_run(cls_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls_run") / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune("reskanet_18", cls_data, out, **FINETUNE_ARGS)
    return result, out, [str(w.message) for w in caught]


# ---------------------------------------------------------------------------------------------- fine-tuning

def test_finetune_learns_and_writes_a_complete_run(cls_run):
    result, out, messages = cls_run
    assert result.best_metric >= TOP1_THRESHOLD, result.history
    rows = _metrics(out)
    with open(out / "metrics.csv") as f:
        assert f.readline().strip().split(",") == list(CLASSIFICATION_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))
    # the two corrupt training files are skipped every epoch, counted, and named in a warning
    assert [int(r["skipped_images"]) for r in rows] == [2] * 6
    assert any("zz_garbage.png" in m for m in messages) and any("zz_truncated.png" in m for m in messages)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["architecture"] == "reskanet_18" and config["num_classes"] == 3
    assert config["label_names"] == list(CLASSES)
    assert {"model.safetensors", "README.md"} <= {p.name for p in (out / "best").iterdir()}
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 6 and state["best_epoch"] == result.best_epoch
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(state)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_saved_model_reloads_evaluates_and_predicts_class_names(cls_run, cls_data, capsys):
    result, out, _ = cls_run
    best_row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    metrics = evaluate(str(out / "best"), cls_data, workers=0, progress=False)
    assert metrics["images"] == 15
    assert metrics["top1"] == pytest.approx(best_row["val_top1"])
    image = cls_data / "val" / "vertical_stripes" / "0001.png"
    [prediction] = predict(str(out / "best"), [image], top_k=2)
    assert len(prediction.top) == 2 and {label for label, _ in prediction.top} <= set(CLASSES)
    assert prediction.top[0][1] >= prediction.top[1][1]
    assert cli_main(["predict", str(out / "best"), str(image), "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in CLASSES)


def test_killed_run_resumes_to_the_same_result(cls_data, cls_run, tmp_path):
    """Ctrl-C a CLI run after its first epoch, resume it: same epochs and the same numbers as an uninterrupted run."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kanzoo", "finetune", "--model", "reskanet_18", "--data", str(cls_data),
           "--out", str(out), "--epochs", "6", "--batch-size", "8", "--lr", "3e-3", "--img-size", "32",
           "--workers", "0", "--seed", "0", "--no-progress", "--model-arg", "width=0.125"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--resume" in stdout + stderr
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 6
    assert len(_metrics(out)) == done
    with pytest.raises(TaskError, match="already holds a run"):
        finetune("reskanet_18", cls_data, out, **FINETUNE_ARGS)
    resumed = finetune("reskanet_18", cls_data, out, resume=True, **FINETUNE_ARGS)
    assert [r["epoch"] for r in resumed.history] == list(range(1, 7))
    uninterrupted = cls_run[0].history
    for got, want in zip(resumed.history, uninterrupted):
        for key in ("train_loss", "val_loss", "val_top1", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (key, got["epoch"])
    assert [int(r["epoch"]) for r in _metrics(out)] == list(range(1, 7))


def test_resume_continues_a_finished_run_with_more_epochs(cls_data, tmp_path):
    out = tmp_path / "run"
    args = dict(FINETUNE_ARGS, epochs=1)
    finetune("reskanet_18", cls_data, out, **args)
    first = _metrics(out)[0]
    finetune("reskanet_18", cls_data, out, resume=True, **dict(args, epochs=2))
    rows = _metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and rows[0] == first
    with pytest.raises(TaskError, match="cannot resume"):
        finetune("reskanet_18", cls_data, out, resume=True, **dict(args, epochs=3, img_size=64))


def _torchrun_two_processes(*kanzoo_args: str) -> subprocess.CompletedProcess:
    """Run ``kanzoo ARGS`` under torchrun with 2 CPU processes; fail with its stderr if it fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "kanzoo",
           *kanzoo_args, "--epochs", "1", "--img-size", "32", "--workers", "0", "--no-progress",
           "--model-arg", "width=0.125"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout and done.stdout.count("epoch 1:") == 1
    return done


def test_two_process_ddp_run_completes_and_writes_once(cls_data, tmp_path):
    out = tmp_path / "ddp"
    done = _torchrun_two_processes("finetune", "--model", "reskanet_18", "--data", str(cls_data), "--out", str(out),
                                   "--batch-size", "4", "--log-with", "tensorboard")
    assert done.stdout.count("best val_top1") == 1
    rows = _metrics(out)
    assert len(rows) == 1 and int(rows[0]["skipped_images"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["best", "curves.png", "last.pt", "metrics.csv", "tensorboard"]
    assert len(list((out / "tensorboard").iterdir())) == 1  # only rank 0 tracks


def test_two_process_ddp_segmentation_completes_and_writes_once(tmp_path):
    data = make_segmentation_folder(tmp_path / "data", train=8, val=4, size=32, num_classes=2, seed=0)
    out = tmp_path / "ddp-seg"
    done = _torchrun_two_processes("segment", "--model", "ukanet_18", "--data", str(data), "--out", str(out),
                                   "--batch-size", "2")
    assert done.stdout.count("best val_miou") == 1
    rows = _metrics(out)
    assert len(rows) == 1 and 0.0 <= float(rows[0]["val_miou"]) <= 1.0
    assert {"best", "metrics.csv", "last.pt"} <= {p.name for p in out.iterdir()}


def test_freeze_backbone_trains_only_the_head(cls_data, tmp_path):
    result = finetune("reskanet_18", cls_data, tmp_path / "run", freeze_backbone=True, **dict(FINETUNE_ARGS, epochs=1))
    state = torch.load(result.out / "last.pt", weights_only=True)["model"]
    torch.manual_seed(0)
    reference = kanzoo.create_model("reskanet_18", num_classes=3, **TINY).state_dict()
    changed = {k for k, v in state.items() if v.dtype.is_floating_point and not torch.equal(v, reference[k])}
    head = {k for k in changed if k.startswith("head.")}
    # the backbone's weights stay as built (only BatchNorm running statistics move); the head learns
    assert head and all(k.startswith("head.") or "running_" in k for k in changed)


# -------------------------------------------------------------------------------------------- segmentation

@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg")
    data = make_segmentation_folder(base / "data", train=32, val=8, size=32, num_classes=2, seed=0)
    result = segment("ukanet_18", data, base / "run", epochs=8, batch_size=4, lr=1e-2, img_size=32, workers=0,
                     progress=False, model_kwargs=TINY)
    return result, data


def test_segmentation_learns_shapes_and_writes_outputs(seg_run, tmp_path):
    result, data = seg_run
    assert result.best_metric >= MIOU_THRESHOLD, result.history
    out = result.out
    rows = _metrics(out)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert {"val_miou", "val_dice", "iou_background", "iou_class1", "dice_class1"} <= set(rows[0])
    assert len(list((out / "overlays").glob("*.png"))) == 4
    metrics = evaluate(str(result.best_dir), data, workers=0, progress=False)
    assert metrics["miou"] == pytest.approx(result.best_metric)
    image = data / "val" / "images" / "0000.png"
    [prediction] = predict(str(result.best_dir), [image], out_dir=tmp_path / "masks")
    mask = Image.open(prediction.mask)
    assert mask.mode == "P" and mask.size == Image.open(image).size
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1}


# ------------------------------------------------------------------------------------------------- export

@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported-program"])
def test_export_round_trip_matches_pytorch(fmt, tmp_path):
    model = kanzoo.create_model("vggkan_11", cfg=[4, "M", 8], num_classes=3).eval()
    out = tmp_path / {"onnx": "m.onnx", "torchscript": "m.pt", "exported-program": "m.pt2"}[fmt]
    report = export_model(model, out, format=fmt, img_size=32)
    assert out.is_file() and report.max_abs_diff <= 1e-4
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    if fmt == "onnx":
        import onnx
        import onnxruntime

        # the KAN layers export as standard ONNX operators (no custom domain, no Python op)
        graph = onnx.load(str(out)).graph
        assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    elif fmt == "torchscript":
        got = torch.jit.load(str(out))(x)
    else:
        got = torch.export.load(str(out)).module()(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_export_cli_from_a_saved_folder_and_bad_targets(cls_run, tmp_path, capsys):
    best = cls_run[1] / "best"
    target = tmp_path / "model.pt"
    assert cli_main(["export", str(best), "--format", "torchscript", "--out", str(target)]) == 0
    assert "max abs difference" in capsys.readouterr().out and target.is_file()
    with pytest.raises(TaskError, match="is a folder"):
        export_model(str(best), tmp_path, format="onnx")
    with pytest.raises(TaskError, match=r"must end in .pt2 .*m.pt2"):
        export_model(str(best), tmp_path / "m.pt", format="exported-program")
    with pytest.raises(TaskError, match="unknown export format"):
        export_model(str(best), tmp_path / "m.x", format="tflite")


# --------------------------------------------------------------------------------------------- quick start

def test_quickstart_trains_saves_reloads_and_reports(tmp_path, capsys):
    report = quickstart(tmp_path / "qs", epochs=1, train_per_class=8, progress=False)
    assert (report.model_dir / "config.json").is_file() and (report.run / "metrics.csv").is_file()
    assert report.images == 8 and 0.0 <= report.top1 <= 1.0
    assert sorted(p.name for p in (report.data / "train").iterdir()) == sorted(
        ["checkerboard", "dots", "horizontal_stripes", "vertical_stripes"])
    again = quickstart(tmp_path / "qs", epochs=1, train_per_class=8, progress=False)
    assert again.run == tmp_path / "qs" / "run-2" and (again.model_dir / "config.json").is_file()
    assert (report.run / "last.pt").is_file(), "a second quick start must keep the first run"
    replaced = quickstart(tmp_path / "qs", epochs=1, train_per_class=8, overwrite=True, progress=False)
    assert replaced.run == report.run


# --------------------------------------------------------------------------------------- class names, misc

def test_imagenet_heads_get_imagenet_class_names():
    model = kanzoo.create_model("reskanet_18", width=0.0625)
    names = label_names(model)
    assert len(names) == 1000 and names[1].startswith("goldfish")


def test_tasks_tell_segmentation_models_by_their_base_class(tmp_path):
    seg = kanzoo.create_model("u2kanet_small", width=0.125, num_classes=1).eval()
    classifier = kanzoo.create_model("reskanet_18", width=0.0625, num_classes=2)
    classifier.is_segmentation = True  # the old flag alone no longer makes a segmentation model
    wrapper = torch.nn.Module()
    wrapper.module = seg  # how DistributedDataParallel holds the model
    assert is_segmentation(seg) and is_segmentation(wrapper) and not is_segmentation(classifier)
    card = (kanzoo.save_pretrained(classifier, tmp_path / "cls") / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        seg.head.bias -= seg(x).median()  # about half of the pixels on each side of 0
    mask = predict_mask(seg, x[0], torch.device("cpu"))
    assert mask.dtype == np.uint8 and np.array_equal(mask, seg.predict(x)[0].numpy())
    assert set(np.unique(mask).tolist()) == {0, 1}  # one logit: foreground is class 1, as in binary masks
    rgb = np.asarray(mask_image(mask, seg.num_classes).convert("RGB"))
    assert rgb[mask == 1].all()  # the saved PNG gives class 1 a colour


def test_push_to_hub_uploads_the_best_model(cls_data, tmp_path, local_hub, hf_cache):
    result = finetune("reskanet_18", cls_data, tmp_path / "run", push_to_hub="kanzoo-tests/pushed-run",
                      **dict(FINETUNE_ARGS, epochs=1))
    pulled = kanzoo.create_model("hf-hub:kanzoo-tests/pushed-run", pretrained=True).eval()
    local = kanzoo.create_model(f"local-dir:{result.best_dir}", pretrained=True).eval()
    assert label_names(pulled) == list(CLASSES)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pulled(x), local(x), atol=0, rtol=0)
    card = local_hub.file("kanzoo-tests/pushed-run", "README.md").decode()
    assert "val_top1" in card


def test_amp_run_on_cpu_trains_in_bfloat16(cls_data, tmp_path):
    result = finetune("reskanet_18", cls_data, tmp_path / "run", amp=True, **dict(FINETUNE_ARGS, epochs=1))
    row = result.history[0]
    assert np.isfinite(row["train_loss"]) and 0.0 <= row["val_top1"] <= 1.0
