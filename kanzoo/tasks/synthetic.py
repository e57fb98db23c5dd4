"""Small synthetic image data sets written to disk in the layouts the tasks read (quick start, tests, demos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PATTERNS = ("horizontal_stripes", "vertical_stripes", "checkerboard", "dots")
SHAPES = ("background", "disc", "square")
CLASS_COLOURS = ((230.0, 40.0, 40.0), (40.0, 220.0, 60.0), (50.0, 80.0, 240.0), (230.0, 220.0, 40.0))


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours that differ clearly in brightness."""
    while True:
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if abs(a.mean() - b.mean()) > 60:
            return a, b


def pattern_image(pattern: str, size: int, rng: np.random.Generator,
                  colour: tuple[float, float, float] | None = None) -> np.ndarray:
    """One ``size x size`` RGB image of ``pattern`` with random (or the given foreground) colours, period,
    phase and noise."""
    period = rng.integers(4, max(size // 3, 6))
    phase = rng.integers(0, period)
    yy, xx = np.mgrid[0:size, 0:size] + phase
    half = period // 2
    if pattern == "horizontal_stripes":
        on = (yy % period) < half
    elif pattern == "vertical_stripes":
        on = (xx % period) < half
    elif pattern == "checkerboard":
        on = ((yy // half) + (xx // half)) % 2 == 0
    elif pattern == "dots":
        on = ((yy % period) - half) ** 2 + ((xx % period) - half) ** 2 < (period / 3.5) ** 2
    else:
        raise ValueError(f"unknown pattern {pattern!r}; choose from {PATTERNS}")
    fg, bg = _colours(rng)
    if colour is not None:
        fg, bg = np.asarray(colour, dtype=float) + rng.normal(0, 15, 3), bg * 0.3
    image = np.where(on[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_classification_folder(root: str | Path, *, train_per_class: int = 40, val_per_class: int = 10,
                               size: int = 32, patterns: tuple[str, ...] = PATTERNS, colour_coded: bool = False,
                               seed: int = 0) -> Path:
    """Write ``root/{train,val}/<pattern>/NNNN.png``: one class per stripe/checker/dot pattern.

    With ``colour_coded`` each class also has its own foreground colour (an easy task for smoke tests).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for index, pattern in enumerate(patterns):
            colour = CLASS_COLOURS[index % len(CLASS_COLOURS)] if colour_coded else None
            folder = root / split / pattern
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(pattern_image(pattern, size, rng, colour)).save(folder / f"{i:04d}.png")
    return root


def shapes_sample(size: int, rng: np.random.Generator, num_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with 1-3 discs (class 1) and, when ``num_classes`` is 3, squares (class 2), and its mask."""
    bg, _ = _colours(rng)
    image = np.clip(bg + rng.normal(0, 20, (size, size, 3)), 0, 255)
    mask = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(1, 4)):
        label = int(rng.integers(1, num_classes))
        radius = rng.integers(size // 10 + 2, size // 4 + 3)
        cy, cx = rng.integers(radius, size - radius, 2)
        if label == 1:
            region = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        else:
            region = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
        colour = np.where(bg.mean() > 127, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3))
        image[region] = colour
        mask[region] = label
    return image.astype(np.uint8), mask


def make_segmentation_folder(root: str | Path, *, train: int = 40, val: int = 10, size: int = 32,
                             num_classes: int = 3, seed: int = 0) -> Path:
    """Write ``root/{train,val}/{images,masks}/NNNN.png`` of shapes; mask pixels are class indices."""
    if num_classes not in (2, 3):
        raise ValueError(f"num_classes must be 2 (discs) or 3 (discs and squares), got {num_classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = shapes_sample(size, rng, num_classes)
            Image.fromarray(image).save(root / split / "images" / f"{i:04d}.png")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{i:04d}.png")
    return root
