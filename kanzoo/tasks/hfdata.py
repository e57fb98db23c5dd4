"""Hugging Face data sets for the training tasks: ``--data hf:NAME_OR_PATH``.

``NAME_OR_PATH`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(``datasets.load_from_disk``) or a Hub dataset id (``datasets.load_dataset``, with ``--hf-config``, the Hub
cache and ``HF_DATASETS_OFFLINE``). The image column is the ``Image`` feature, the label column the ``ClassLabel``
feature (whose names become the class names); for segmentation the mask column is the other ``Image`` column.
Splits: ``train`` plus ``validation`` (or ``val``, ``valid``, ``test``); with ``--val-split``, a seeded part of
``train`` instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .data import (DECODE_ERRORS, ClassificationData, SegmentationData, SegmentationDataset, Skipped, class_count,
                   discover_classification, discover_segmentation, hold_out, mask_array, to_rgb)
from .errors import TaskError, TaskRuntimeError

HF_PREFIX = "hf:"
VAL_SPLITS = ("validation", "val", "valid", "test")
IMAGE_NAMES = ("image", "img", "images", "pixel_values", "picture")
MASK_WORDS = ("mask", "label", "annotation", "segmentation", "semantic", "seg", "gt")
_INSTALL = 'pip install datasets (or "kanzoo[train]")'


@dataclass
class HFOptions:
    """How to read a Hugging Face data set: the Hub config and the columns (found automatically when None)."""

    config: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    mask_column: str | None = None


def is_hf(data: str | Path) -> bool:
    """True when ``data`` names a Hugging Face data set (``hf:NAME_OR_PATH``)."""
    return isinstance(data, str) and data.startswith(HF_PREFIX)


def check_hf_options(data: str | Path, hf: HFOptions | None, task: str) -> None:
    """Refuse Hugging Face options without ``hf:`` data and columns the task does not read (nothing read yet)."""
    hf = hf or HFOptions()
    given = {"--hf-config": hf.config, "--hf-image-column": hf.image_column, "--hf-label-column": hf.label_column,
             "--hf-mask-column": hf.mask_column}
    for option, value in given.items():
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise TaskError(f"{option} must not be empty")
    named = [option for option, value in given.items() if value is not None]
    if named and not is_hf(data):
        raise TaskError(f"{', '.join(named)} only apply to Hugging Face data; pass --data hf:NAME_OR_PATH")
    wrong = "--hf-mask-column" if task == "finetune" else "--hf-label-column"
    if given[wrong] is not None:
        right = "--hf-label-column" if task == "finetune" else "--hf-mask-column"
        raise TaskError(f"{wrong} does not apply to {task}; name the column with {right}")
    if is_hf(data) and not data[len(HF_PREFIX):].strip():
        raise TaskError("--data hf: needs a data set: hf:ORG/NAME (the Hub) or hf:FOLDER (save_to_disk)")


def _load(name: str, config: str | None) -> Any:
    """The ``Dataset`` or ``DatasetDict`` that ``name`` names."""
    try:
        import datasets
        from datasets.exceptions import DatasetNotFoundError
    except ImportError:
        raise TaskError(f"--data hf:{name} needs the datasets package, which is not installed: {_INSTALL}") from None
    folder = Path(name).expanduser()
    if folder.is_dir():
        if config is not None:
            raise TaskError(f"--hf-config selects a configuration of a Hub data set, but {name} is a folder written "
                            "by save_to_disk; drop --hf-config")
        try:
            return datasets.load_from_disk(str(folder))
        except FileNotFoundError:
            raise TaskError(f"{folder} is not a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk; "
                            "check the path") from None
    if name.startswith((".", "/", "~")) or folder.exists():
        raise TaskError(f"--data hf:{name}: no such folder; pass a folder written by save_to_disk or a Hub id")
    try:
        return datasets.load_dataset(name, config)
    except DatasetNotFoundError:
        raise TaskError(f"data set {name!r} was not found on the Hugging Face Hub; check the id, or log in for a "
                        "gated or private one") from None
    except ConnectionError as err:
        raise TaskRuntimeError(f"cannot load data set {name!r}: it is not in the Hugging Face cache and the Hub cannot "
                               f"be reached ({_first_line(err)}); run once online to cache it") from None
    except ValueError as err:
        raise TaskError(f"cannot load data set {name!r}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _splits(loaded: Any, name: str, val_split: float | None) -> tuple[Any, Any | None]:
    """The train split and the validation split (None: hold out ``val_split`` of train)."""
    if not hasattr(loaded, "keys"):
        if val_split is None:
            raise TaskError(f"hf:{name} is a single split; pass --val-split 0.2 to hold out part of it for validation")
        return loaded, None
    splits = sorted(loaded.keys())
    if "train" not in loaded:
        raise TaskError(f"hf:{name} has no train split (splits: {', '.join(splits)}); save one named train")
    if val_split is not None:
        return loaded["train"], None
    for split in VAL_SPLITS:
        if split in loaded:
            return loaded["train"], loaded[split]
    raise TaskError(f"hf:{name} has no validation or test split (splits: {', '.join(splits)}); pass --val-split 0.2")


def _column(features: Any, given: str | None, option: str, candidates: Sequence[str], what: str,
            preferred: Callable[[str], bool]) -> str:
    """The column ``given`` (checked) or the only candidate (among several, the only ``preferred`` one)."""
    if given is not None:
        if given not in features:
            raise TaskError(f"the data set has no column {given!r} (columns: {', '.join(features)}); fix {option}")
        return given
    if len(candidates) > 1:
        liked = [name for name in candidates if preferred(name)]
        if len(liked) == 1:
            return liked[0]
    if len(candidates) != 1:
        found = f"columns {', '.join(candidates)} all qualify" if candidates else "no column qualifies"
        raise TaskError(f"cannot tell the {what} column ({found}; columns: {', '.join(features)}); name it with "
                        f"{option}")
    return candidates[0]


def _image_columns(features: Any) -> list[str]:
    import datasets

    return [name for name, feature in features.items() if isinstance(feature, datasets.Image)]


def _check_image_column(features: Any, column: str, option: str) -> None:
    import datasets

    if not isinstance(features[column], datasets.Image):
        raise TaskError(f"column {column!r} holds {type(features[column]).__name__} values, not images (a "
                        f"datasets.Image feature); name the image column with {option}")


def _is_mask_name(name: str) -> bool:
    return any(word in name.lower() for word in MASK_WORDS)


# ----------------------------------------------------------------------------------------------- classification

class HFImageDataset(Dataset):
    """Rows of a Hugging Face data set as ``(transformed RGB image, class index)``; undecodable images yield
    :class:`Skipped`."""

    def __init__(self, table: Any, image_column: str, label_column: str,
                 transform: Callable[[Image.Image], torch.Tensor], name: str) -> None:
        self.table = table.select_columns([image_column, label_column])
        self.image_column, self.label_column = image_column, label_column
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | Skipped:
        try:
            row = self.table[index]
            image = to_rgb(row[self.image_column])
        except DECODE_ERRORS as err:
            return Skipped(f"{self.name}[{index}]", f"{type(err).__name__}: {err}")
        return self.transform(image), int(row[self.label_column])


@dataclass
class HFClassificationData:
    """The splits of a Hugging Face classification data set, its columns, class names and name."""

    classes: list[str]
    train: Any
    val: Any
    image_column: str
    label_column: str
    name: str

    def datasets(self, train_transform: Callable[[Image.Image], torch.Tensor],
                 val_transform: Callable[[Image.Image], torch.Tensor]) -> tuple[Dataset, Dataset]:
        """The training and validation data sets, with their transforms."""
        return (HFImageDataset(self.train, self.image_column, self.label_column, train_transform, f"{self.name}:train"),
                HFImageDataset(self.val, self.image_column, self.label_column, val_transform, f"{self.name}:val"))


def _labels(table: Any, column: str) -> tuple[list[int], list[str]]:
    """The class indices of ``column`` and the class names (a ClassLabel's, else the indices as names)."""
    import datasets

    feature = table.features[column]
    if not isinstance(feature, datasets.ClassLabel) and not (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        raise TaskError(f"column {column!r} holds {feature}, not class indices (a datasets.ClassLabel or integer "
                        "column); name the label column with --hf-label-column")
    labels = [int(value) for value in table[column]]
    if isinstance(feature, datasets.ClassLabel):
        return labels, list(feature.names)
    return labels, [str(i) for i in range(max(labels, default=0) + 1)]


def _check_labels(labels: Sequence[int], count: int, column: str, split: str) -> None:
    bad = [value for value in labels if not 0 <= value < count]
    if bad:
        raise TaskError(f"{len(bad)} rows of the {split} split have label {bad[0]} in column {column!r}, outside "
                        f"0..{count - 1} (-1 marks a missing label); pass --val-split 0.2 to validate on part of "
                        "train instead, or fix the labels")


def classification_source(data: str | Path, val_split: float | None, seed: int,
                          hf: HFOptions | None = None) -> ClassificationData | HFClassificationData:
    """The classification data that ``data`` names: an ImageFolder tree or ``hf:NAME_OR_PATH``."""
    check_hf_options(data, hf, "finetune")
    if not is_hf(data):
        return discover_classification(data, val_split, seed)
    hf = hf or HFOptions()
    name = str(data)[len(HF_PREFIX):]
    train, val = _splits(_load(name, hf.config), name, val_split)
    features = train.features
    image = _column(features, hf.image_column, "--hf-image-column", _image_columns(features), "image",
                    lambda column: column.lower() in IMAGE_NAMES)
    _check_image_column(features, image, "--hf-image-column")
    import datasets

    labels_found = [column for column, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
    label = _column(features, hf.label_column, "--hf-label-column", labels_found, "label",
                    lambda column: column.lower() in ("label", "labels"))
    train_labels, classes = _labels(train, label)
    if len(classes) < 2:
        raise TaskError(f"hf:{name} has only one class in column {label!r}; classification needs at least two")
    _check_labels(train_labels, len(classes), label, "train")
    if val is None:
        rng, train_rows, val_rows = random.Random(seed), [], []
        for index in range(len(classes)):
            kept, held = hold_out([i for i, v in enumerate(train_labels) if v == index], val_split, rng)
            train_rows += kept
            val_rows += held
        train, val = train.select(sorted(train_rows)), train.select(sorted(val_rows))
    else:
        missing = [column for column in (image, label) if column not in val.features]
        if missing:
            raise TaskError(f"the validation split of hf:{name} lacks the column(s) {', '.join(missing)}; pass "
                            "--val-split 0.2 to validate on part of train instead")
        _check_labels([int(v) for v in val[label]], len(classes), label, "validation")
    if len(val) == 0:
        raise TaskError(f"no validation rows in hf:{name}; use a larger --val-split")
    return HFClassificationData(classes, train, val, image, label, Path(name).name or name)


# ------------------------------------------------------------------------------------------------- segmentation

def _mask_values(value: Any, name: str) -> np.ndarray:
    if isinstance(value, Image.Image):
        return mask_array(value, name)
    array = np.asarray(value)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise TaskError(f"mask {name} is not a single-channel image or 2-D array of class indices; name the mask "
                        "column with --hf-mask-column")
    return array.astype(np.int64)


class HFSegmentationDataset(SegmentationDataset):
    """Rows of a Hugging Face data set as image/mask pairs, resized and normalised like image/mask folders."""

    def __init__(self, table: Any, image_column: str, mask_column: str, name: str, size: tuple[int, int],
                 mean: Sequence[float], std: Sequence[float], train: bool = False, binary_255: bool = False) -> None:
        super().__init__([], size, mean, std, train, binary_255)
        self.table = table.select_columns([image_column, mask_column])
        self.image_column, self.mask_column = image_column, mask_column
        self.name = name
        self.pairs = list(range(len(self.table)))

    def read_pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The ``index``-th row's image (RGB) and mask (class indices)."""
        row = self.table[index]
        return to_rgb(row[self.image_column]), _mask_values(row[self.mask_column], self.sample_name(index))

    def sample_name(self, index: int) -> str:
        """The ``index``-th row's name, ``DATASET:SPLIT[index]``."""
        return f"{self.name}[{index}]"


@dataclass
class HFSegmentationData:
    """The splits of a Hugging Face segmentation data set, its columns, class count and name."""

    num_classes: int
    train: Any
    val: Any
    binary_255: bool
    skipped: list[Skipped]
    image_column: str
    mask_column: str
    name: str

    def datasets(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> tuple[Dataset, Dataset]:
        """The training (flipped) and validation data sets at ``size``, normalised by ``mean`` and ``std``."""
        columns = (self.image_column, self.mask_column)
        return (HFSegmentationDataset(self.train, *columns, f"{self.name}:train", size, mean, std, True,
                                      self.binary_255),
                HFSegmentationDataset(self.val, *columns, f"{self.name}:val", size, mean, std, False, self.binary_255))


def _scan(table: Any, image: str, mask: str, split: str, skipped: list[Skipped]) -> tuple[list[int], dict[str, set]]:
    """Check every row's mask against its image; the readable rows and each mask's values."""
    kept, values = [], {}
    for index in range(len(table)):
        label = f"{split}[{index}]"
        try:
            row = table[index]
            width_height = row[image].size
            array = _mask_values(row[mask], label)
        except TaskError:
            raise
        except DECODE_ERRORS as err:
            skipped.append(Skipped(label, f"{type(err).__name__}: {err}"))
            continue
        if (array.shape[1], array.shape[0]) != tuple(width_height):
            raise TaskError(f"mask {label} is {array.shape[1]}x{array.shape[0]} but its image is "
                            f"{width_height[0]}x{width_height[1]}; a mask must have its image's size")
        if array.size and array.min() < 0:
            raise TaskError(f"mask {label} has negative values; pixel values must be class indices 0..K-1")
        kept.append(index)
        values[label] = set(np.unique(array).tolist())
    return kept, values


def segmentation_source(data: str | Path, num_classes: int | None, val_split: float | None, seed: int,
                        hf: HFOptions | None = None) -> SegmentationData | HFSegmentationData:
    """The segmentation data that ``data`` names: image/mask folders or ``hf:NAME_OR_PATH``."""
    check_hf_options(data, hf, "segment")
    if not is_hf(data):
        return discover_segmentation(data, num_classes, val_split, seed)
    hf = hf or HFOptions()
    name = str(data)[len(HF_PREFIX):]
    train, val = _splits(_load(name, hf.config), name, val_split)
    features = train.features
    images = _image_columns(features)
    if hf.mask_column is None and len(images) < 2:
        raise TaskError(f"hf:{name} has {len(images)} image column(s) ({', '.join(images) or 'none'}) but segmentation "
                        "needs an image and a mask column; name them with --hf-image-column and --hf-mask-column")
    mask = _column(features, hf.mask_column, "--hf-mask-column", [c for c in images if c != hf.image_column], "mask",
                   _is_mask_name)
    image = _column(features, hf.image_column, "--hf-image-column", [c for c in images if c != mask], "image",
                    lambda column: not _is_mask_name(column))
    _check_image_column(features, image, "--hf-image-column")
    skipped: list[Skipped] = []
    train_rows, values = _scan(train, image, mask, "train", skipped)
    if val is None:
        train_rows, val_rows = hold_out(train_rows, val_split, random.Random(seed))
        train, val = train.select(train_rows), train.select(val_rows)
    else:
        if mask not in val.features or image not in val.features:
            raise TaskError(f"the validation split of hf:{name} lacks the columns {image!r} and {mask!r}; pass "
                            "--val-split 0.2 to validate on part of train instead")
        val_rows, val_values = _scan(val, image, mask, "validation", skipped)
        values.update(val_values)
        train, val = train.select(train_rows), val.select(val_rows)
    if not len(train) or not len(val):
        raise TaskError(f"hf:{name} needs readable image/mask rows for both training and validation (found "
                        f"{len(train)} and {len(val)}); add rows or change --val-split")
    count, binary_255 = class_count(values, num_classes)
    return HFSegmentationData(count, train, val, binary_255, skipped, image, mask, Path(name).name or name)
