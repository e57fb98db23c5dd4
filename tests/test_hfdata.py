"""Hugging Face data sets for finetune and segment (``--data hf:NAME_OR_PATH``), from save_to_disk folders that the
tests write: columns found or named, ClassLabel names saved with the model, splits, and one-line errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kanzoo.cli import main as cli_main
from kanzoo.tasks import TaskError, TaskRuntimeError, finetune, segment
from kanzoo.tasks.hfdata import HFOptions, classification_source, segmentation_source
from kanzoo.tasks.recipe import Recipe
from kanzoo.tasks.synthetic import pattern_image, shapes_sample

datasets = pytest.importorskip("datasets")

CLASSES = ["dots", "checkerboard"]
TINY = dict(epochs=1, batch_size=4, img_size=16, workers=0, progress=False, pretrained=False,
            model_kwargs={"cfg": [4, "M", 8]})


pytestmark = pytest.mark.usefixtures("single_thread")


def _classification_split(per_class: int, seed: int, extra: dict | None = None) -> "datasets.Dataset":
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, pattern in enumerate(CLASSES):
        for _ in range(per_class):
            images.append(Image.fromarray(pattern_image(pattern, 16, rng)))
            labels.append(label)
    columns = {"caption": [f"a {CLASSES[label]}" for label in labels], "img": images, "label": labels}
    features = {"caption": datasets.Value("string"), "img": datasets.Image(),
                "label": datasets.ClassLabel(names=CLASSES)}
    for name, (feature, values) in (extra or {}).items():
        columns[name], features[name] = values(labels), feature
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


@pytest.fixture(scope="module")
def hf_classes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "patterns"
    datasets.DatasetDict({"train": _classification_split(6, 0), "validation": _classification_split(2, 1)}
                         ).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def hf_masks(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(8):
        image, mask = shapes_sample(32, rng, num_classes=3)
        images.append(Image.fromarray(image))
        masks.append(Image.fromarray(mask.astype(np.uint8), mode="L"))
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    folder = tmp_path_factory.mktemp("hf") / "shapes"
    datasets.Dataset.from_dict({"image": images, "annotation": masks}, features=features).save_to_disk(str(folder))
    return folder


def test_finetune_on_a_dataset_dict_saves_the_classlabel_names(hf_classes, tmp_path) -> None:
    result = finetune("vggkan_11", f"hf:{hf_classes}", tmp_path / "run", **TINY)
    config = json.loads((result.best_dir / "config.json").read_text())
    assert config["label_names"] == CLASSES
    state = torch.load(result.out / "last.pt", weights_only=True)
    assert state["run_info"]["classes"] == CLASSES
    with open(result.out / "metrics.csv", newline="") as f:
        assert 0.0 <= float(next(csv.DictReader(f))["val_top1"]) <= 1.0


def test_columns_are_found_or_named_and_splits_held_out(hf_classes, tmp_path) -> None:
    found = classification_source(f"hf:{hf_classes}", None, 0)
    assert (found.image_column, found.label_column, found.classes) == ("img", "label", CLASSES)
    assert (len(found.train), len(found.val)) == (12, 4)
    held = classification_source(f"hf:{hf_classes}", 0.5, 0)
    assert (len(held.train), len(held.val)) == (6, 6) and sorted(held.val["label"]) == [0, 0, 0, 1, 1, 1]
    single = tmp_path / "single"
    extra = {"thumbnail": (datasets.Image(), lambda labels: [Image.new("RGB", (4, 4))] * len(labels)),
             "quality": (datasets.ClassLabel(names=["low", "high"]), lambda labels: [0] * len(labels))}
    _classification_split(4, 2, extra).save_to_disk(str(single))
    with pytest.raises(TaskError, match="single split; pass --val-split"):
        classification_source(f"hf:{single}", None, 0)
    auto = classification_source(f"hf:{single}", 0.25, 0)
    assert (auto.image_column, auto.label_column) == ("img", "label")  # among several, the usual names
    two = tmp_path / "two"
    features = datasets.Features({"a": datasets.Image(), "b": datasets.Image(), "label": datasets.ClassLabel(2)})
    datasets.Dataset.from_dict({"a": [Image.new("RGB", (4, 4))] * 2, "b": [Image.new("RGB", (4, 4))] * 2,
                                "label": [0, 1]}, features=features).save_to_disk(str(two))
    with pytest.raises(TaskError, match="cannot tell the image column .columns a, b all qualify.*--hf-image-column"):
        classification_source(f"hf:{two}", 0.5, 0)
    named = classification_source(f"hf:{single}", 0.25, 0, HFOptions(image_column="img", label_column="quality"))
    assert named.classes == ["low", "high"]
    for options, words in ((HFOptions(image_column="img", label_column="nope"), "no column 'nope'.*--hf-label"),
                           (HFOptions(image_column="caption", label_column="label"), "not images"),
                           (HFOptions(image_column="img", label_column="caption"), "not class indices")):
        with pytest.raises(TaskError, match=words):
            classification_source(f"hf:{single}", 0.25, 0, options)


def test_segment_on_a_single_split_with_a_recipe(hf_masks, tmp_path) -> None:
    found = segmentation_source(f"hf:{hf_masks}", None, 0.25, 0)
    assert (found.image_column, found.mask_column, found.num_classes) == ("image", "annotation", 3)
    out = tmp_path / "run"
    result = segment("ukanet_18", f"hf:{hf_masks}", out, epochs=1, batch_size=2, img_size=32, workers=0,
                     progress=False, pretrained_encoder=False, val_split=0.25, overlays=1, model_kwargs={"width": 0.125},
                     recipe=Recipe(ema=True, grad_accum=2, warmup_epochs=1, log=["tensorboard"]))
    with open(out / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert 0.0 <= float(row["ema_val_miou"]) <= 1.0 and result.best_metric >= float(row["val_miou"])
    assert [p.name for p in (out / "overlays").iterdir()] == ["shapes:val[0].png"]
    assert list((out / "tensorboard").iterdir())
    with pytest.raises(TaskError, match="--mixup only apply to classification"):
        segment("ukanet_18", f"hf:{hf_masks}", tmp_path / "other", val_split=0.25, recipe=Recipe(mixup=0.2))


def test_segmentation_masks_are_checked(tmp_path) -> None:
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    rows = {"image": [Image.new("RGB", (8, 8))] * 2, "mask": [Image.new("L", (8, 6))] * 2}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(TaskError, match="mask train.0. is 8x6 but its image is 8x8"):
        segmentation_source(f"hf:{tmp_path / 'bad'}", None, 0.5, 0)


def test_missing_package_unknown_data_sets_and_wrong_options_are_one_line(hf_classes, tmp_path, monkeypatch,
                                                                          capsys) -> None:
    with pytest.raises(TaskError, match="only apply to Hugging Face data"):
        classification_source(str(hf_classes), None, 0, HFOptions(config="x"))
    with pytest.raises(TaskError, match="--hf-config selects a configuration of a Hub data set"):
        classification_source(f"hf:{hf_classes}", None, 0, HFOptions(config="x"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(TaskRuntimeError, match="not in the Hugging Face cache"):
        classification_source("hf:nobody/nothing", None, 0)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "datasets", None)
        argv = ["finetune", "--model", "vggkan_11", "--data", f"hf:{hf_classes}", "--out", str(tmp_path / "run")]
        assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the datasets package" in err and "pip install datasets" in err
    assert not (tmp_path / "run").exists()
