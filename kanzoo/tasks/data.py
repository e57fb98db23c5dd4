"""Data sets for the tasks: ImageFolder trees for classification, image/mask folders for segmentation.

Folders are checked up front (missing or empty folders, class folders without images, unpaired or
mismatched masks) and fail with an error that says what to fix. Files that cannot be decoded while
training are skipped: the data set yields a :class:`Skipped` marker that the collate function
drops and counts, so one corrupt file never stops an epoch.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from .errors import TaskError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_T = TypeVar("_T")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_LAYOUT_HELP = ("expected DIR/train/<class>/<image> and DIR/val/<class>/<image>, or DIR/<class>/<image> "
                "with --val-split FRACTION")
_SEG_LAYOUT_HELP = ("expected DIR/images/ and DIR/masks/ (same file stems) with --val-split FRACTION, or "
                    "DIR/train/{images,masks}/ and DIR/val/{images,masks}/")


class Skipped(NamedTuple):
    """A sample that could not be read: its file and why."""

    path: str
    reason: str


class Batch(NamedTuple):
    """A collated batch; ``inputs`` is None when every sample in it was skipped."""

    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    skipped: list[Skipped]


def collate_skipping(samples: Sequence[tuple[torch.Tensor, Any] | Skipped]) -> Batch:
    """Stack the readable samples and report the skipped ones."""
    skipped = [s for s in samples if isinstance(s, Skipped)]
    good = [s for s in samples if not isinstance(s, Skipped)]
    if not good:
        return Batch(None, None, skipped)
    inputs = torch.stack([s[0] for s in good])
    targets = torch.as_tensor(np.stack([np.asarray(s[1]) for s in good]))
    return Batch(inputs, targets, skipped)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, hidden files ignored), sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, scaled by its mode's range: 16-bit (``I;16``) and 32-bit integer (``I``) images as
    0..65535, float images (``F``) as 0..1, both mapped linearly onto 0..255 with values outside clipped; every
    other mode through Pillow's ``convert('RGB')`` (which would clip the former to almost white or black)."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        scaled = np.asarray(image, dtype=np.float64) / 257.0
    elif image.mode == "F":
        scaled = np.asarray(image, dtype=np.float64) * 255.0
    else:
        return image.convert("RGB")
    gray = np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully as 8-bit RGB (see :func:`to_rgb`; raises on unreadable or truncated files)."""
    with Image.open(path) as image:
        return to_rgb(image)


def _require_folder(path: Path, what: str) -> None:
    if not path.exists():
        raise TaskError(f"{what} {path} does not exist; check the path")
    if not path.is_dir():
        raise TaskError(f"{what} {path} is not a folder; check the path")


# ----------------------------------------------------------------------------------------------- classification

@dataclass
class ClassificationData:
    """Samples ``(path, class_index)`` of the train and validation splits, the class names and the data set's
    name (recorded with the best model)."""

    classes: list[str]
    train: list[tuple[str, int]] = field(default_factory=list)
    val: list[tuple[str, int]] = field(default_factory=list)
    name: str = ""

    def datasets(self, train_transform: Callable[[Image.Image], torch.Tensor],
                 val_transform: Callable[[Image.Image], torch.Tensor]) -> tuple[Dataset, Dataset]:
        """The training and validation data sets, with their transforms."""
        return ImageDataset(self.train, train_transform), ImageDataset(self.val, val_transform)


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class_name: images}`` of the class folders in ``root``; errors for empty folders."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = list_images(root)
        hint = f" (it holds {len(loose)} loose images: put them in one folder per class)" if loose else ""
        raise TaskError(f"{root} has no class folders{hint}; {_LAYOUT_HELP}")
    found = {}
    for folder in folders:
        images = list_images(folder)
        if not images:
            raise TaskError(f"class folder {folder} has no images (extensions {', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder")
        found[folder.name] = images
    return found


def hold_out(items: list[_T], fraction: float, rng: random.Random) -> tuple[list[_T], list[_T]]:
    """Shuffle ``items`` and hold out ``fraction`` of them (at least one on each side when there are two or more)."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    n_val = round(len(shuffled) * fraction)
    if len(shuffled) >= 2:
        n_val = min(max(n_val, 1), len(shuffled) - 1)
    else:
        n_val = 0
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def _check_fraction(val_split: float | None) -> None:
    if val_split is not None and not 0.0 < val_split < 1.0:
        raise TaskError(f"--val-split must be a fraction between 0 and 1, got {val_split}")


def _read_splits(root: Path, val_split: float | None, read: Callable[[Path], _T],
                 layout_help: str) -> tuple[_T, _T | None]:
    """``read`` of ``root/train`` and ``root/val``; without ``val/`` (which needs ``val_split``) the val part is
    None and the training part is ``root/train``, or ``root`` itself when that is missing too."""
    _require_folder(root, "data folder")
    _check_fraction(val_split)
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir():
        if val_split is None:
            raise TaskError(f"{root} has no train/ and val/ folders; {layout_help}")
        return read(root), None
    train = read(train_dir)
    if val_dir.is_dir():
        return train, read(val_dir)
    if val_split is None:
        raise TaskError(f"{train_dir} exists but {val_dir} does not; add a val/ folder or pass --val-split 0.2")
    return train, None


def discover_classification(root: str | Path, val_split: float | None = None, seed: int = 0) -> ClassificationData:
    """Read an ImageFolder tree: ``train/`` and ``val/`` class folders, or class folders plus ``val_split``."""
    root = Path(root)
    train, val = _read_splits(root, val_split, _class_folders, _LAYOUT_HELP)
    val = val or {}
    unknown = sorted(set(val) - set(train))
    if unknown:
        raise TaskError(f"{root / 'val'} has classes that {root / 'train'} lacks: {', '.join(unknown)}; "
                        "every validation class needs training images")
    classes = sorted(train)
    data = ClassificationData(classes, name=root.resolve().name)
    rng = random.Random(seed)
    for index, name in enumerate(classes):
        train_images = train[name]
        if not val and val_split is not None:
            train_images, held_out = hold_out(train_images, val_split, rng)
            data.val += [(str(p), index) for p in held_out]
        data.train += [(str(p), index) for p in train_images]
        data.val += [(str(p), index) for p in val.get(name, [])]
    if len(classes) < 2:
        raise TaskError(f"found only one class ({classes[0]}) in {root}; classification needs at least two")
    if not data.val:
        raise TaskError(f"no validation images in {root}; add images to val/ or use a larger --val-split")
    return data


def _eval_folder(root: str | Path) -> Path:
    """The folder evaluation reads: ``root/val`` if present, else ``root``."""
    root = Path(root)
    _require_folder(root, "data folder")
    return root / "val" if (root / "val").is_dir() else root


def discover_eval_images(root: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and samples for evaluation: ``root/val`` if present, else ``root``'s class folders."""
    found = _class_folders(_eval_folder(root))
    classes = sorted(found)
    return classes, [(str(p), i) for i, name in enumerate(classes) for p in found[name]]


class ImageDataset(Dataset):
    """``(path, label)`` samples decoded as RGB and transformed; unreadable files yield :class:`Skipped`."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | Skipped:
        path, label = self.samples[index]
        try:
            image = load_rgb(path)
        except DECODE_ERRORS as err:
            return Skipped(path, f"{type(err).__name__}: {err}")
        return self.transform(image), label


# ------------------------------------------------------------------------------------------------- segmentation

@dataclass
class SegmentationData:
    """Image/mask pairs of both splits, the class count, and pairs skipped because they were unreadable."""

    num_classes: int
    train: list[tuple[str, str]] = field(default_factory=list)
    val: list[tuple[str, str]] = field(default_factory=list)
    binary_255: bool = False
    skipped: list[Skipped] = field(default_factory=list)
    name: str = ""

    def datasets(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> tuple[Dataset, Dataset]:
        """The training (flipped) and validation data sets at ``size``, normalised by ``mean`` and ``std``."""
        return (SegmentationDataset(self.train, size, mean, std, True, self.binary_255),
                SegmentationDataset(self.val, size, mean, std, False, self.binary_255))


def _unique_stems(files: list[Path], what: str) -> dict[str, Path]:
    """``{stem: file}``; an error naming both files when two share a stem (``x.png`` and ``x.jpg``)."""
    by_stem: dict[str, Path] = {}
    for path in files:
        other = by_stem.setdefault(path.stem, path)
        if other != path:
            raise TaskError(f"{other} and {path} share the stem {path.stem!r}, which pairs {what} with their "
                            f"{'masks' if what == 'images' else 'images'}; rename or remove one of them")
    return by_stem


def _pairs(folder: Path) -> list[tuple[str, str]]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    for sub in (images_dir, masks_dir):
        if not sub.is_dir():
            raise TaskError(f"{sub} does not exist; {_SEG_LAYOUT_HELP}")
    images, masks = list_images(images_dir), list_images(masks_dir)
    if not images:
        raise TaskError(f"{images_dir} has no images; {_SEG_LAYOUT_HELP}")
    _unique_stems(images, "images")
    mask_by_stem = _unique_stems(masks, "masks")
    missing = [p.name for p in images if p.stem not in mask_by_stem]
    if missing:
        raise TaskError(f"{len(missing)} images in {images_dir} have no mask with the same stem in {masks_dir} "
                        f"(e.g. {', '.join(missing[:3])}); add the masks or remove those images")
    extra = sorted(set(mask_by_stem) - {p.stem for p in images})
    if extra:
        warnings.warn(f"{len(extra)} masks in {masks_dir} have no image and are ignored (e.g. {', '.join(extra[:3])})",
                      stacklevel=3)
    return [(str(p), str(mask_by_stem[p.stem])) for p in images]


def read_mask(path: str | Path) -> np.ndarray:
    """A class-index mask as an integer array (H, W); errors for colour masks. A 16-bit mask holding only 0 and
    65535 is read as 0 and 255 (a binary mask, like an 8-bit 0/255 one)."""
    with Image.open(path) as mask:
        return mask_array(mask, str(path))


def mask_array(mask: Image.Image, name: str) -> np.ndarray:
    """The class indices of a mask image (see :func:`read_mask`); ``name`` says which mask in errors."""
    if mask.mode not in ("L", "P", "I", "1") and not mask.mode.startswith("I;16"):
        raise TaskError(f"mask {name} has mode {mask.mode} ({len(mask.getbands())} channels); masks must be "
                        "single-channel images whose pixel values are class indices (PNG mode L or P)")
    array = np.asarray(mask, dtype=np.int64)
    if mask.mode != "L" and array.size and set(np.unique(array).tolist()) <= {0, 65535}:
        array = array // 257
    return array


def _scan_masks(pairs: list[tuple[str, str]], skipped: list[Skipped]) -> tuple[list[tuple[str, str]], dict[str, set[int]]]:
    """Check every pair (sizes, readability); returns the readable pairs and each mask's pixel values."""
    kept, values = [], {}
    for image_path, mask_path in pairs:
        try:
            with Image.open(image_path) as image:
                image_size = image.size
            mask = read_mask(mask_path)
        except TaskError:
            raise
        except DECODE_ERRORS as err:
            skipped.append(Skipped(image_path, f"{type(err).__name__}: {err}"))
            continue
        if (mask.shape[1], mask.shape[0]) != image_size:
            raise TaskError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                            f"{image_size[0]}x{image_size[1]}; a mask must have its image's size")
        found = set(np.unique(mask).tolist())
        if min(found) < 0:
            raise TaskError(f"mask {mask_path} has negative values; pixel values must be class indices 0..K-1")
        kept.append((image_path, mask_path))
        values[mask_path] = found
    return kept, values


def class_count(values: dict[str, set[int]], num_classes: int | None) -> tuple[int, bool]:
    """The number of classes the masks need (or check ``num_classes``), and whether masks are 0/255 binary."""
    union = set().union(*values.values())
    if union <= {0, 255} and 255 in union:
        needed, binary_255 = 2, True
    else:
        if 255 in union:
            bad = [m for m, v in values.items() if 255 in v][:3]
            raise TaskError(f"masks {', '.join(bad)} hold 255 next to other class indices; use class indices "
                            "0..K-1 in every mask (0/255 is only read as a binary mask when no other value occurs)")
        needed, binary_255 = max(max(union) + 1, 2), False
    if num_classes is not None and needed > num_classes:
        bad = [m for m, v in values.items() if max(v) >= num_classes][:3]
        raise TaskError(f"masks hold class index {needed - 1} but num_classes is {num_classes} (e.g. "
                        f"{', '.join(bad)}); raise --num-classes to at least {needed} or fix the masks")
    if num_classes is None and needed > 2 * len(union):
        shown = ", ".join(map(str, sorted(union)[:8])) + (" ..." if len(union) > 8 else "")
        bad = [m for m, v in values.items() if max(v) == needed - 1][:3]
        warnings.warn(f"the masks hold {len(union)} distinct values ({shown}) but the largest is {needed - 1}, so "
                      f"{needed} classes are inferred (e.g. {', '.join(bad)}); pass --num-classes to check that, or "
                      "fix stray values in the masks", stacklevel=3)
    return (num_classes or needed), binary_255


def discover_segmentation(root: str | Path, num_classes: int | None = None, val_split: float | None = None,
                          seed: int = 0) -> SegmentationData:
    """Read ``images/`` + ``masks/`` (or ``train/`` and ``val/`` with those inside) and check every mask."""
    root = Path(root)
    train, val = _read_splits(root, val_split, _pairs, _SEG_LAYOUT_HELP)
    skipped: list[Skipped] = []
    train, values = _scan_masks(train, skipped)
    val, val_values = _scan_masks(val or [], skipped)
    values.update(val_values)
    if not val and val_split is not None:
        train, val = hold_out(train, val_split, random.Random(seed))
    if not train or not val:
        raise TaskError(f"{root} needs readable image/mask pairs for both training and validation "
                        f"(found {len(train)} and {len(val)}); add images or change --val-split")
    num_classes, binary_255 = class_count(values, num_classes)
    return SegmentationData(num_classes, train, val, binary_255, skipped, root.resolve().name)


class SegmentationDataset(Dataset):
    """Image/mask pairs resized to ``size`` (bilinear / nearest), normalised, hflipped when training."""

    def __init__(self, pairs: Sequence[tuple[str, str]], size: tuple[int, int], mean: Sequence[float],
                 std: Sequence[float], train: bool = False, binary_255: bool = False) -> None:
        self.pairs = list(pairs)
        self.size = size
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.train = train
        self.binary_255 = binary_255

    def __len__(self) -> int:
        return len(self.pairs)

    def image_tensor(self, image: Image.Image) -> torch.Tensor:
        """Resize and normalise one RGB image to the model's input."""
        image = image.resize((self.size[1], self.size[0]), Image.BILINEAR)
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (array - self.mean) / self.std

    def read_pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The ``index``-th image (RGB) and mask (class indices as read); raises when a file cannot be decoded."""
        image_path, mask_path = self.pairs[index]
        return load_rgb(image_path), read_mask(mask_path)

    def sample_name(self, index: int) -> str:
        """The ``index``-th sample's name: its image's path."""
        return str(self.pairs[index][0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray] | Skipped:
        try:
            image, mask = self.read_pair(index)
        except DECODE_ERRORS as err:
            return Skipped(self.sample_name(index), f"{type(err).__name__}: {err}")
        if self.binary_255:
            mask = (mask == 255).astype(np.int64)
        mask_image = Image.fromarray(mask.astype(np.int32), mode="I")
        mask = np.asarray(mask_image.resize((self.size[1], self.size[0]), Image.NEAREST), dtype=np.int64)
        tensor = self.image_tensor(image)
        if self.train and random.random() < 0.5:
            tensor = tensor.flip(-1)
            mask = mask[:, ::-1].copy()
        return tensor, mask


class ShardSampler(Sampler[int]):
    """Every ``world``-th index starting at ``rank``, in order and without padding (for evaluation)."""

    def __init__(self, length: int, rank: int = 0, world: int = 1) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def discover_eval_pairs(root: str | Path, num_classes: int) -> SegmentationData:
    """Image/mask pairs for evaluation: ``root/val`` if present, else ``root`` (``images/`` + ``masks/``)."""
    folder = _eval_folder(root)
    skipped: list[Skipped] = []
    pairs, values = _scan_masks(_pairs(folder), skipped)
    if not pairs:
        raise TaskError(f"no readable image/mask pairs in {folder}")
    num_classes, binary_255 = class_count(values, num_classes)
    return SegmentationData(num_classes, [], pairs, binary_255, skipped)
