"""Training from scratch with one budget: a CNN, its kanify, and ResKANet-18, on two small image sets.

    pip install scikit-learn        # for its bundled handwritten digits (real scans, not generated)
    python benchmarks/finetune_comparison.py --out runs/comparison --epochs 12

Data sets: the quick start's synthetic patterns (4 classes, 32x32) and scikit-learn's bundled digits
(1,797 real 8x8 scans of handwritten digits, 10 classes, upscaled to 32x32, a stratified 80/20 split).
Every model trains with ``kanzoo.tasks.finetune`` from random weights with the same epochs, batch size,
learning rate, weight decay, input size and seed. Writes ``comparison.csv`` (validation top-1 per
epoch and the time per epoch) and ``comparison.png`` (accuracy per epoch) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from kanzoo.tasks import finetune
from kanzoo.tasks.synthetic import PATTERNS, make_classification_folder

MODELS = {  # label -> (model name, constructor arguments)
    "resnet18 (CNN)": ("resnet18", {}),
    "kanify:resnet18 (KAGN, degree 3)": ("kanify:resnet18", {"conv": "kagn", "degree": 3}),
    "reskanet_18 (KAGN, degree 3)": ("reskanet_18", {}),
}


def write_digits(root: Path, size: int = 32, seed: int = 0) -> Path:
    """scikit-learn's digits as ``root/{train,val}/<digit>/NNNN.png`` (80/20, stratified, seeded)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        cut = int(round(0.8 * len(indices)))
        for split, chosen in (("train", indices[:cut]), ("val", indices[cut:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(chosen):
                pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
                Image.fromarray(pixels).resize((size, size), Image.NEAREST).save(folder / f"{i:04d}.png")
    return root


def run(out: Path, epochs: int, batch_size: int, lr: float) -> list[dict[str, object]]:
    """Train every model on every data set; one row per (data set, model, epoch)."""
    data = {"patterns": out / "data" / "patterns", "digits": out / "data" / "digits"}
    if not data["patterns"].exists():
        make_classification_folder(data["patterns"], train_per_class=60, val_per_class=15, size=32,
                                   patterns=PATTERNS, seed=0)
    if not data["digits"].exists():
        write_digits(data["digits"])
    rows = []
    for data_name, folder in data.items():
        for label, (name, kwargs) in MODELS.items():
            run_dir = out / "runs" / data_name / name.replace(":", "_")
            finetune(name, folder, run_dir, epochs=epochs, batch_size=batch_size, lr=lr, img_size=32,
                     pretrained=False, seed=0, overwrite=True, progress=False, model_kwargs=kwargs)
            with open(run_dir / "metrics.csv", newline="") as f:
                for metrics in csv.DictReader(f):
                    rows.append({"data": data_name, "model": label, "epoch": int(metrics["epoch"]),
                                 "val_top1": float(metrics["val_top1"]),
                                 "epoch_time_s": float(metrics["epoch_time_s"])})
    return rows


def plot(rows: list[dict[str, object]], path: Path) -> None:
    """Validation top-1 per epoch, one panel per data set."""
    datasets = sorted({row["data"] for row in rows})
    fig = Figure(figsize=(5 * len(datasets), 3.6))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, data_name in zip(axes[0], datasets):
        for label in MODELS:
            points = [(row["epoch"], row["val_top1"]) for row in rows if row["data"] == data_name
                      and row["model"] == label]
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(data_name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation top-1")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/comparison"), help="output folder")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args.out, args.epochs, args.batch_size, args.lr)
    with open(args.out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "comparison.png")
    print(f"wrote {args.out / 'comparison.csv'} and {args.out / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
