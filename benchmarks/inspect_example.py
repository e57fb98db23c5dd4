"""The worked example of docs/inspect.md: inspect and prune the quick start's model, with and without --kan-l1.

    python benchmarks/inspect_example.py --out runs/inspect-example

Trains the quick start's model (ResKANet-18, width 0.25, 32x32, 30 epochs) on the quick start's synthetic patterns
twice, once plainly and once with ``kan_l1``; inspects both (``OUT/<run>/inspect``), prunes both with
``max_drop=0.01`` (``OUT/<run>/pruned``) and prints a markdown table of parameters, GFLOPs, accuracy and forward
time before and after. The forward times are the medians of ``--rounds`` rounds that alternate the unpruned and
the pruned model in one process, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from kanzoo.inspect import count_gflops, count_parameters, forward_time
from kanzoo.tasks import finetune, inspect, prune
from kanzoo.tasks.modeling import create_task_model
from kanzoo.tasks.quickstart import QUICKSTART_IMG_SIZE, QUICKSTART_MODEL, QUICKSTART_MODEL_KWARGS
from kanzoo.tasks.synthetic import PATTERNS, make_classification_folder


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _interleaved_ms(models: list[torch.nn.Module], shape: tuple[int, ...], batch_size: int, rounds: int) -> list[float]:
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model, found in zip(models, times):
            found.append(forward_time(model, shape, batch_size=batch_size, repeats=5, warmup=2))
    return [statistics.median(found) for found in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--kan-l1", type=float, default=1e-3)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the forward timing")
    args = parser.parse_args(argv)

    data = args.out / "data"
    if not (data / "train").is_dir():
        make_classification_folder(data, train_per_class=60, val_per_class=15, size=QUICKSTART_IMG_SIZE,
                                   patterns=PATTERNS, seed=0)
    rows = []
    for label, l1 in (("quick start", 0.0), (f"quick start, --kan-l1 {args.kan_l1:g}", args.kan_l1)):
        run = args.out / ("plain" if l1 == 0 else "kan-l1")
        if not (run / "best" / "config.json").is_file():
            finetune(QUICKSTART_MODEL, data, run, epochs=args.epochs, batch_size=16, lr=2e-3,
                     img_size=QUICKSTART_IMG_SIZE, pretrained=False, workers=0, seed=0, overwrite=True,
                     progress=False, model_kwargs=QUICKSTART_MODEL_KWARGS, kan_l1=l1)
        analyses = inspect(str(run / "best"), data, run / "inspect", overwrite=True, progress=False)
        report = prune(str(run / "best"), data, run / "pruned", max_drop=args.max_drop, overwrite=True,
                       progress=False)
        original, pruned = create_task_model(str(run / "best")), create_task_model(str(run / "pruned"))
        shape = (3, QUICKSTART_IMG_SIZE, QUICKSTART_IMG_SIZE)
        ms_before, ms_after = _interleaved_ms([original, pruned], shape, args.batch_size, args.rounds)
        mean_nonlinearity = sum(a.nonlinearity for a in analyses) / len(analyses)
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts().items())) or "none"
        rows.append((label, mean_nonlinearity, counts, count_parameters(original), count_parameters(pruned),
                     count_gflops(original, shape), count_gflops(pruned, shape), report.before, report.after,
                     ms_before, ms_after))

    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, commit {_commit()}, {datetime.date.today()}; forward time: batch "
          f"{args.batch_size}, median of {args.rounds} interleaved rounds\n")
    print("| model | mean nonlinearity | layers pruned | parameters | GFLOPs | top-1 | forward ms |")
    print("|---|---|---|---|---|---|---|")
    for (label, nonlin, counts, p0, p1, g0, g1, a0, a1, t0, t1) in rows:
        print(f"| {label} | {nonlin:.3f} | {counts} | {p0 / 1e3:.1f} k -> {p1 / 1e3:.1f} k ({p1 / p0:.2f}x) | "
              f"{g0:.4f} -> {g1:.4f} ({g1 / g0:.2f}x) | {a0:.3f} -> {a1:.3f} | {t0:.1f} -> {t1:.1f} "
              f"({t1 / t0:.2f}x) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
