"""The training recipe (timm's optimizers, schedules, EMA, Mixup/CutMix, smoothing; accumulation, clipping,
channels-last, compile) and experiment tracking: each switch runs, is recorded in last.pt and kept by --resume."""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import kanzoo
from kanzoo.cli import main as cli_main
from kanzoo.tasks import TaskError, finetune
from kanzoo.tasks.recipe import SCHEDULERS, Recipe, Training, check_model, classification_loss, with_defaults
from kanzoo.tasks.synthetic import make_classification_folder
from kanzoo.tasks.tracking import Tracker

TINY = dict(epochs=1, batch_size=4, img_size=16, workers=0, progress=False, pretrained=False,
            model_kwargs={"cfg": [4, "M", 8]})
FULL = Recipe(opt="sgd", sched="cosine", warmup_epochs=1, clip_grad=1.0, grad_accum=2, ema=True, ema_decay=0.9,
              mixup=0.2, cutmix=0.5, label_smoothing=0.1, channels_last=True, log=["tensorboard"])


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_classification_folder(tmp_path_factory.mktemp("recipe") / "data", train_per_class=6,
                                      val_per_class=2, size=16, patterns=("dots", "checkerboard"), colour_coded=True)


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    finetune("vggkan_11", data, out, recipe=FULL, **dict(TINY, epochs=2))
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_switch_is_recorded_in_last_pt(full_run) -> None:
    state = torch.load(full_run / "last.pt", weights_only=True)
    assert state["recipe"] == with_defaults(FULL).record()
    assert set(state["ema"]) == set(state["model"])
    assert "warmup_t" in state["scheduler"]
    assert isinstance(state["tracking"]["run_id"], str)
    assert list(_rows(full_run)[0])[-3:] == ["ema_val_loss", "ema_val_top1", "ema_val_top5"]


def test_an_interrupted_run_resumes_its_switches_and_states_exactly(data, full_run, tmp_path, monkeypatch) -> None:
    """Stop after epoch 1 (Ctrl-C), resume without repeating the switches: the same rows and EMA as uninterrupted."""
    real_log = Tracker.log

    def log_then_interrupt(self, row):
        real_log(self, row)
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(Tracker, "log", log_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            finetune("vggkan_11", data, out, recipe=FULL, **dict(TINY, epochs=2))
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    result = finetune("vggkan_11", data, out, resume=True, **dict(TINY, epochs=2))
    resumed, whole = (torch.load(folder / "last.pt", weights_only=True) for folder in (out, full_run))
    assert resumed["recipe"] == whole["recipe"] and [r["epoch"] for r in result.history] == [1, 2]
    for key, value in whole["ema"].items():
        assert torch.allclose(resumed["ema"][key].float(), value.float(), atol=1e-6), key
    for got, want in zip(_rows(out), _rows(full_run)):
        for key in ("train_loss", "val_loss", "ema_val_loss", "lr"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5), key
    for asked, words in ((Recipe(grad_accum=3), "--grad-accum 2 but this command asks for 3"),
                         (Recipe(ema=False), "--ema True"), (Recipe(mixup=0.3), "--mixup 0.2")):
        with pytest.raises(TaskError, match=words):
            finetune("vggkan_11", data, out, resume=True, recipe=asked, **dict(TINY, epochs=3))
    finetune("vggkan_11", data, out, resume=True, recipe=Recipe(log=[], channels_last=False), **dict(TINY, epochs=3))
    assert torch.load(out / "last.pt", weights_only=True)["recipe"]["log"] == []


def test_tensorboard_scalars_carry_the_metrics_columns(full_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(full_run / "tensorboard"))
    events.Reload()
    rows = _rows(full_run)
    expected = {key for key in rows[0] if key != "epoch"} | {"images_per_s"}
    assert set(events.Tags()["scalars"]) == expected
    for key in expected - {"images_per_s"}:
        scalars = events.Scalars(key)
        assert [scalar.step for scalar in scalars] == [1, 2]
        for scalar, row in zip(scalars, rows):
            assert scalar.value == pytest.approx(float(row[key]), rel=1e-4, abs=1e-6), key


def _linear_training(grad_accum: int, batches: int) -> tuple[nn.Module, Training]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    recipe = with_defaults(Recipe(grad_accum=grad_accum, opt="sgd", sched="constant"))
    training = Training(recipe, model, model.parameters(), lr=0.1, weight_decay=0.0, epochs=1,
                        batches_per_epoch=batches, scaler=torch.amp.GradScaler("cpu", enabled=False), num_classes=2,
                        classification=True)
    return model, training


def test_gradient_accumulation_equals_one_batch_of_the_whole_group() -> None:
    inputs, targets = torch.randn(8, 3), torch.randint(0, 2, (8,))
    whole, one_step = _linear_training(1, 1)
    one_step.start_epoch(1)
    one_step.backward(nn.functional.cross_entropy(whole(inputs), targets), 0)
    split, accumulated = _linear_training(2, 2)
    accumulated.start_epoch(1)
    for index, part in enumerate((slice(0, 4), slice(4, 8))):
        accumulated.backward(nn.functional.cross_entropy(split(inputs[part]), targets[part]), index)
    assert accumulated.updates == one_step.updates == 1
    assert torch.allclose(split.weight, whole.weight, atol=1e-6) and not torch.equal(split.weight, nn.Linear(3, 2).weight)


def test_a_partial_last_group_still_updates_and_clipping_bounds_the_step() -> None:
    model, training = _linear_training(2, 3)
    training.start_epoch(1)
    for index in range(3):
        training.backward(model(torch.randn(4, 3)).sum() * 1000, index)
    assert training.updates == 2
    steps = []
    for clip in (0.01, None):
        clipped, clipping = _linear_training(1, 1)
        clipping.recipe.clip_grad = clip
        start = clipped.weight.detach().clone()
        clipping.start_epoch(1)
        clipping.backward(clipped(torch.ones(4, 3)).sum() * 1000, 0)
        steps.append(float((clipped.weight.detach() - start).norm()))
    assert steps[0] <= 1.9 * 0.1 * 0.01 + 1e-6 < 1 < steps[1]  # timm's sgd: Nesterov momentum 0.9, 1.9 x lr x grad


def test_the_ema_is_saved_as_best_when_it_scores_higher() -> None:
    model, training = _linear_training(1, 1)
    training.ema = type("Ema", (), {"module": nn.Linear(3, 2)})()
    row = {"val_top1": 0.5, "val_loss": 1.0, "ema_val_top1": 0.75, "ema_val_loss": 0.8}
    chosen, score, best_row = training.best_candidate(model, row, "val_top1")
    assert chosen is training.ema.module and score == 0.75 and best_row["val_top1"] == 0.75
    assert best_row["val_loss"] == 0.8
    chosen, score, _ = training.best_candidate(model, {**row, "ema_val_top1": 0.25}, "val_top1")
    assert chosen is model and score == 0.5


def test_losses_follow_the_switches() -> None:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    assert isinstance(classification_loss(with_defaults(Recipe(mixup=0.2))), SoftTargetCrossEntropy)
    assert isinstance(classification_loss(with_defaults(Recipe(cutmix=1.0, label_smoothing=0.1))),
                      SoftTargetCrossEntropy)
    smoothing = classification_loss(with_defaults(Recipe(label_smoothing=0.1)))
    assert isinstance(smoothing, LabelSmoothingCrossEntropy) and smoothing.smoothing == 0.1
    assert type(classification_loss(with_defaults(Recipe()))) is nn.CrossEntropyLoss


def test_layer_decay_scales_the_groups_and_needs_a_group_matcher() -> None:
    model = kanzoo.create_model("vggkan_11", cfg=[4, "M", 8], num_classes=2)
    recipe = with_defaults(Recipe(layer_decay=0.5))
    check_model(recipe, model)
    training = Training(recipe, model, model.parameters(), lr=0.1, weight_decay=0.05, epochs=1, batches_per_epoch=1,
                        scaler=torch.amp.GradScaler("cpu", enabled=False), num_classes=2, classification=True)
    scales = sorted({group["lr_scale"] for group in training.optimizer.param_groups})
    assert len(scales) >= 2 and scales[-1] == 1.0 and scales[0] < 1.0
    segmenter = kanzoo.create_model("ukanet_18", width=0.125, num_classes=2)
    with pytest.raises(TaskError, match="group_matcher"):
        check_model(recipe, segmenter)


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_every_offered_schedule_trains_and_resumes(sched, data, tmp_path) -> None:
    out = tmp_path / "run"
    finetune("vggkan_11", data, out, recipe=Recipe(sched=sched, opt="adamw"), **TINY)
    result = finetune("vggkan_11", data, out, resume=True, **dict(TINY, epochs=2))
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert torch.load(out / "last.pt", weights_only=True)["recipe"]["sched"] == sched


def test_compile_trains_the_compiled_module_and_saves_the_plain_one(data, tmp_path, monkeypatch) -> None:
    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    result = finetune("vggkan_11", data, tmp_path / "run", recipe=Recipe(compile=True, ema=True), **TINY)
    assert len(compiled) == 1
    state = torch.load(result.out / "last.pt", weights_only=True)
    assert set(state["model"]) == set(state["ema"]) and not [key for key in state["model"] if "_orig_mod" in key]
    kanzoo.create_model(f"local-dir:{result.best_dir}")


def test_a_missing_tracker_package_is_one_error_line(data, tmp_path, monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    argv = ["finetune", "--model", "vggkan_11", "--no-pretrained", "--model-arg", "cfg=[4,'M',8]", "--data", str(data),
            "--out", str(tmp_path / "run"), "--workers", "0", "--log", "tensorboard,wandb"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --log wandb needs the wandb package")
    assert "pip install wandb" in err and not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (an optional tracker)")
def test_wandb_runs_offline_inside_the_run_folder(data, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    finetune("vggkan_11", data, out, recipe=Recipe(log=["wandb"]), **TINY)
    runs = list((out / "wandb").glob("offline-run-*"))
    run_id = torch.load(out / "last.pt", weights_only=True)["tracking"]["run_id"]
    assert len(runs) == 1 and runs[0].name.endswith(run_id) and list(runs[0].glob("*.wandb"))


def test_the_tracking_option_passes_through_torchrun() -> None:
    """torchrun's parser reads ``--log`` as an abbreviation of its ``--log-dir``; ``--log-with`` passes through."""
    from torch.distributed.run import get_args_parser

    from kanzoo.cli import build_parser

    argv = ["-m", "kanzoo", "finetune", "--model", "m", "--data", "d", "--out", "o", "--log-with", "tensorboard,wandb"]
    script_args = get_args_parser().parse_args(["--nproc-per-node", "2", *argv]).training_script_args
    assert build_parser().parse_args(script_args).log == [["tensorboard", "wandb"]]
