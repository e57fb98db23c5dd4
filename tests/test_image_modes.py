"""The right data, or an error: 16-bit and float images scaled by their mode's range, 16-bit and stray mask values,
shared stems, and predicted masks whose class indices do not wrap above 255."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import kanzoo
from kanzoo.tasks import TaskError, predict
from kanzoo.tasks.classification import data_config, transforms
from kanzoo.tasks.data import ImageDataset, discover_segmentation, load_rgb, read_mask
from kanzoo.tasks.segmentation import mask_image, predict_mask

RAMP16 = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The same picture as an 8-bit PNG, a 16-bit PNG, a 32-bit integer TIFF and a float TIFF."""
    folder = tmp_path_factory.mktemp("modes")
    eight = np.rint(RAMP16 / 257).astype(np.uint8)
    Image.fromarray(eight).save(folder / "eight.png")
    Image.fromarray(RAMP16).save(folder / "sixteen.png")
    Image.fromarray(RAMP16.astype(np.int32)).save(folder / "int32.tif")
    Image.fromarray((eight / 255).astype(np.float32)).save(folder / "float.tif")
    return folder, eight


def test_16_bit_integer_and_float_images_are_scaled_by_their_range(images) -> None:
    folder, eight = images
    assert Image.open(folder / "sixteen.png").mode == "I;16" and Image.open(folder / "float.tif").mode == "F"
    expected = np.repeat(eight[..., None], 3, axis=2)
    for name in ("eight.png", "sixteen.png", "int32.tif", "float.tif"):
        assert np.array_equal(np.asarray(load_rgb(folder / name)), expected), name


def test_training_evaluation_and_prediction_read_them_alike(images, tmp_path) -> None:
    folder, _ = images
    model = kanzoo.create_model("vggkan_11", cfg=[4, "M", 8], num_classes=3).eval()
    _, evaluation = transforms(data_config(model, 32))
    tensors = [ImageDataset([(str(folder / name), 0)], evaluation)[0][0] for name in ("eight.png", "sixteen.png")]
    torch.testing.assert_close(tensors[0], tensors[1])
    folder_model = kanzoo.save_pretrained(model, tmp_path / "model")
    eight, sixteen, floating = predict(str(folder_model), [folder / "eight.png", folder / "sixteen.png",
                                                           folder / "float.tif"], top_k=3, img_size=32)
    assert eight.top == sixteen.top == floating.top


def _mask(path, array, dtype=np.uint8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=dtype)).save(path)


def _pair(root, stem, mask, dtype=np.uint8, suffix=".png") -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / "images" / f"{stem}{suffix}")
    _mask(root / "masks" / f"{stem}.png", mask, dtype)


def test_masks_16_bit_binary_stray_values_and_shared_stems(tmp_path) -> None:
    root = tmp_path / "seg"
    half = np.zeros((8, 8)); half[:4] = 65535
    _pair(root, "a", half, np.uint16)
    _pair(root, "b", np.zeros((8, 8)), np.uint16)
    assert read_mask(root / "masks" / "a.png").max() == 255
    found = discover_segmentation(root, val_split=0.5)
    assert found.binary_255 and found.num_classes == 2
    stray = np.zeros((8, 8)); stray[0, 0], stray[1, 1] = 200, 1
    _pair(root, "b", stray)
    _mask(root / "masks" / "a.png", np.zeros((8, 8)))
    with pytest.warns(UserWarning, match=r"3 distinct values \(0, 1, 200\) but the largest is 200, so 201 classes"):
        assert discover_segmentation(root, val_split=0.5).num_classes == 201
    with pytest.raises(TaskError, match="class index 200 but num_classes is 3"):
        discover_segmentation(root, num_classes=3, val_split=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _pair(root, "b", np.eye(8) * 2)  # 0, 2 and no 1: close enough, no warning
        assert discover_segmentation(root, val_split=0.5).num_classes == 3
    _pair(root, "a", np.zeros((8, 8)), suffix=".jpg")
    with pytest.raises(TaskError, match=r"a.jpg and .*a.png share the stem 'a'|a.png and .*a.jpg share the stem"):
        discover_segmentation(root, val_split=0.5)


def test_predicted_masks_keep_class_indices_above_255(tmp_path) -> None:
    mask = np.array([[0, 255], [256, 299]])
    image = mask_image(mask, 300)
    image.save(tmp_path / "mask.png")
    assert np.array_equal(read_mask(tmp_path / "mask.png"), mask)
    assert mask_image(mask.clip(0, 3), 4).mode == "P"
    model = kanzoo.create_model("u2kanet_small", width=0.125, num_classes=300).eval()
    with torch.no_grad():
        model.head.bias[:] = -10
        model.head.bias[299] = 10
    assert (predict_mask(model, torch.zeros(3, 32, 32), torch.device("cpu")) == 299).all()
