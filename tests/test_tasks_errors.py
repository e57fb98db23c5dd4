"""Bad input to the tasks: every case fails early with a TaskError that names the problem and the fix."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from kanzoo.cli import main as cli_main
from kanzoo.tasks import TaskError, finetune, predict, segment
from kanzoo.tasks.data import discover_classification, discover_segmentation
from kanzoo.tasks.modeling import check_model_name
from kanzoo.tasks.runs import RunFolder
from kanzoo.tasks.synthetic import make_classification_folder, make_segmentation_folder


def _image(path, size=(8, 8), colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _mask(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path)


@pytest.fixture
def class_tree(tmp_path):
    return make_classification_folder(tmp_path / "data", train_per_class=3, val_per_class=1, size=8,
                                      patterns=("dots", "checkerboard"))


def test_missing_and_empty_data_folders(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        discover_classification(tmp_path / "nope", val_split=0.2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="has no class folders"):
        discover_classification(tmp_path / "empty", val_split=0.2)
    _image(tmp_path / "loose" / "a.png")
    with pytest.raises(TaskError, match="1 loose images: put them in one folder per class"):
        discover_classification(tmp_path / "loose", val_split=0.2)


def test_class_folder_without_images(class_tree):
    (class_tree / "train" / "stripes").mkdir()
    (class_tree / "train" / "stripes" / "notes.txt").write_text("no images here")
    with pytest.raises(TaskError, match=r"class folder .*stripes has no images.*add images or remove"):
        discover_classification(class_tree)


def test_layout_problems(class_tree, tmp_path):
    make_classification_folder(tmp_path / "one", train_per_class=2, val_per_class=1, size=8, patterns=("dots",))
    with pytest.raises(TaskError, match="only one class"):
        discover_classification(tmp_path / "one")
    (class_tree / "val" / "extra").mkdir()
    _image(class_tree / "val" / "extra" / "x.png")
    with pytest.raises(TaskError, match="classes that .* lacks: extra"):
        discover_classification(class_tree)
    flat = make_classification_folder(tmp_path / "flat", train_per_class=4, val_per_class=0, size=8,
                                      patterns=("dots", "checkerboard")) / "train"
    with pytest.raises(TaskError, match="--val-split"):
        discover_classification(flat)
    with pytest.raises(TaskError, match="between 0 and 1"):
        discover_classification(flat, val_split=1.5)
    split = discover_classification(flat, val_split=0.25, seed=1)
    assert len(split.train) == 6 and len(split.val) == 2 and split.classes == ["checkerboard", "dots"]
    assert {label for _, label in split.val} == {0, 1}


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(TaskError, match="unknown model 'reskanet18'; did you mean: reskanet_18"):
        check_model_name("reskanet18")
    with pytest.raises(TaskError, match="unknown pretrained tag 'nope' for reskanet_18"):
        check_model_name("reskanet_18.nope")
    with pytest.raises(TaskError, match="unknown model 'zzzz'; run `kanzoo list`"):
        check_model_name("zzzz")


def test_output_folder_holding_a_run(tmp_path):
    out = tmp_path / "out"
    (out / "best").mkdir(parents=True)
    (out / "metrics.csv").write_text("epoch\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TaskError, match=r"already holds a run \(metrics.csv, best\); pass --resume"):
        RunFolder(out)
    with pytest.raises(TaskError, match="nothing to resume"):
        RunFolder(out, resume=True)
    with pytest.raises(TaskError, match="contradict"):
        RunFolder(out, resume=True, overwrite=True)
    run = RunFolder(out, overwrite=True)
    run.prepare()  # the previous run's outputs stay until the new run writes its first epoch
    run.begin_epoch_write()
    run.end_epoch_write()
    assert sorted(p.name for p in out.iterdir()) == [".kanzoo-run.lock", "notes.txt"]  # only the run's own outputs go
    run.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(TaskError, match="is a file"):
        RunFolder(tmp_path / "file")


def test_bad_settings_and_corrupt_checkpoint(class_tree, tmp_path):
    with pytest.raises(TaskError, match="--epochs must be at least 1"):
        finetune("reskanet_18", class_tree, tmp_path / "a", epochs=0)
    with pytest.raises(TaskError, match="unknown model"):
        finetune("reskanet_81", class_tree, tmp_path / "b", epochs=1, workers=0)
    with pytest.raises(TaskError, match="segmentation model; use `kanzoo segment`"):
        finetune("ukanet_18", class_tree, tmp_path / "c", epochs=1, workers=0, model_kwargs={"width": 0.125})
    out = tmp_path / "d"
    out.mkdir()
    (out / "last.pt").write_bytes(b"half a checkpoint")
    with pytest.raises(TaskError, match="cannot read checkpoint .*: it is damaged or not a torch checkpoint"):
        finetune("reskanet_18", class_tree, out, epochs=1, workers=0, resume=True, model_kwargs={"width": 0.125})


def test_cli_prints_errors_and_exits_2(tmp_path, capsys):
    code = cli_main(["finetune", "--model", "reskanet_18", "--data", str(tmp_path / "missing"), "--out",
                     str(tmp_path / "out")])
    assert code == 2
    assert "error: data folder" in capsys.readouterr().err
    assert cli_main(["finetune", "--model", "r", "--data", ".", "--out", "o", "--model-arg", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["finetune", "segment"])
def test_training_commands_keep_freed_memory_unless_told_not_to(command, tmp_path, monkeypatch, capsys):
    calls: list[str] = []
    monkeypatch.setattr("kanzoo.runtime.keep_freed_memory", lambda: calls.append(command) or True)
    monkeypatch.delenv("KANZOO_KEEP_FREED_MEMORY", raising=False)  # restored afterwards
    args = [command, "--model", "reskanet_18", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]
    assert cli_main(args) == 2 and calls == [command]
    assert cli_main(args + ["--allocator", "default"]) == 2 and calls == [command]
    assert os.environ["KANZOO_KEEP_FREED_MEMORY"] == "0", "the layers must not apply it on their own either"
    assert "error: data folder" in capsys.readouterr().err


def test_segmentation_mask_problems(tmp_path):
    root = tmp_path / "seg"
    _image(root / "images" / "a.png", (8, 8))
    _image(root / "images" / "b.png", (8, 8))
    _mask(root / "masks" / "a.png", np.zeros((8, 8)))
    with pytest.raises(TaskError, match="have no mask with the same stem"):
        discover_segmentation(root, val_split=0.5)
    _mask(root / "masks" / "b.png", np.zeros((6, 8)))
    with pytest.raises(TaskError, match=r"mask .*b.png is 8x6 but its image .* is 8x8"):
        discover_segmentation(root, val_split=0.5)
    _mask(root / "masks" / "b.png", np.full((8, 8), 4))
    with pytest.raises(TaskError, match="hold class index 4 but num_classes is 3.*--num-classes to at least 5"):
        discover_segmentation(root, num_classes=3, val_split=0.5)
    assert discover_segmentation(root, val_split=0.5).num_classes == 5
    _mask(root / "masks" / "b.png", np.where(np.eye(8) > 0, 255, 3))
    with pytest.raises(TaskError, match="255 next to other class indices"):
        discover_segmentation(root, val_split=0.5)
    _mask(root / "masks" / "b.png", np.where(np.eye(8) > 0, 255, 0))
    binary = discover_segmentation(root, val_split=0.5)
    assert binary.binary_255 and binary.num_classes == 2
    Image.new("RGB", (8, 8)).save(root / "masks" / "b.png")
    with pytest.raises(TaskError, match="masks must be single-channel"):
        discover_segmentation(root, val_split=0.5)
    with pytest.raises(TaskError, match="has no train/ and val/ folders"):
        discover_segmentation(root)
    with pytest.raises(TaskError, match=r"images.* does not exist"):
        discover_segmentation(tmp_path, val_split=0.5)


def test_segmentation_corrupt_pair_is_skipped_and_sizes_checked(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", train=4, val=2, size=32, num_classes=2)
    (root / "train" / "images" / "0003.png").write_bytes(b"broken")
    found = discover_segmentation(root)
    assert len(found.train) == 3 and [s.path.endswith("0003.png") for s in found.skipped] == [True]
    with pytest.raises(TaskError, match="not a multiple of the model's output stride 32; use --img-size 64"):
        segment("ukanet_18", root, tmp_path / "out", img_size=40, epochs=1, workers=0, model_kwargs={"width": 0.125})
    with pytest.raises(TaskError, match="is a classifier; use `kanzoo finetune`"):
        segment("reskanet_18", root, tmp_path / "out2", epochs=1, workers=0, model_kwargs={"width": 0.125})


def test_predict_bad_input(tmp_path):
    with pytest.raises(TaskError, match="image files not found"):
        predict("reskanet_18", [tmp_path / "missing.png"])
    _image(tmp_path / "a.png")
    with pytest.raises(TaskError, match="no pretrained weights, so its predictions would be random"):
        predict("vggkan_13", [tmp_path / "a.png"])
