"""``kanzoo inspect`` and ``kanzoo prune``: look inside a model's KAN convolutions, and make them smaller."""

from __future__ import annotations

import argparse

from kanzoo.tasks.inspection import inspect
from kanzoo.tasks.pruning import prune

from . import arguments
from .tasks import _MODEL_HELP, _guarded

_DATA_HELP = "image folder in a layout training reads (class folders, or images/ + masks/ for segmentation models)"


@_guarded
def _inspect(args: argparse.Namespace) -> int:
    analyses = inspect(args.model, args.data, args.out, samples=args.samples, layers=args.layers, top=args.top,
                       batch_size=args.batch_size, img_size=args.img_size, workers=args.workers, seed=args.seed,
                       overwrite=args.overwrite, progress=args.progress)
    most = max(analyses, key=lambda a: a.nonlinearity)
    print(f"inspected {len(analyses)} KAN convolutions; most nonlinear: {most.name} ({most.nonlinearity:.3f})")
    print(f"  table    {args.out}/summary.csv")
    print(f"  report   {args.out}/report.md (one picture per layer in {args.out}/layers/)")
    return 0


@_guarded
def _prune(args: argparse.Namespace) -> int:
    report = prune(args.model, args.data, args.out, max_drop=args.max_drop, samples=args.samples,
                   batch_size=args.batch_size, img_size=args.img_size, workers=args.workers, device=args.device,
                   seed=args.seed, overwrite=args.overwrite, progress=args.progress)
    before, after = report.cost_before, report.cost_after
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts().items()))
    if not report.plans:
        print(f"no pruning kept {report.metric} within --max-drop {args.max_drop}; {args.out} holds the model as it "
              "was")
    else:
        print(f"pruned {len(report.plans)} KAN convolutions ({counts}) in {len(report.evaluations)} evaluations")
    rows = [("parameters", f"{before.params / 1e6:.3f} M", f"{after.params / 1e6:.3f} M"),
            ("GFLOPs", f"{before.gflops:.4f}", f"{after.gflops:.4f}"),
            (f"forward ms (batch {before.batch_size}, CPU, {before.threads} threads)", f"{before.forward_ms:.1f}",
             f"{after.forward_ms:.1f}"),
            (report.metric, f"{report.before:.4f}", f"{report.after:.4f}")]
    width = max(len(row[0]) for row in rows)
    print(f"{'':{width}}  {'before':>10}  {'after':>10}")
    for name, old, new in rows:
        print(f"{name:{width}}  {old:>10}  {new:>10}")
    print(f"hub-ready model in {args.out} (details: {args.out}/pruning.json)")
    return 0


def _common(parser: argparse.ArgumentParser, samples: int, batch_size: int) -> None:
    parser.add_argument("model", type=arguments.model_source("MODEL"), help=_MODEL_HELP)
    parser.add_argument("--data", required=True, type=arguments.non_empty("--data"), help=_DATA_HELP)
    parser.add_argument("--out", required=True, type=arguments.non_empty("--out"), help="output folder")
    parser.add_argument("--samples", type=arguments.whole("--samples", 1), default=samples,
                        help=f"images the statistics are collected on (default {samples})")
    parser.add_argument("--batch-size", type=arguments.whole("--batch-size", 1), default=batch_size,
                        help=f"(default {batch_size})")
    parser.add_argument("--img-size", type=arguments.image_size, help="square input size (default: the model's cfg)")
    parser.add_argument("--workers", type=arguments.whole("--workers", 0), help="data-loading processes (default 0)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="seed of the image sample (0)")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``inspect`` and ``prune`` to the ``kanzoo`` parser."""
    p = subparsers.add_parser("inspect", help="plot the learned functions of a model's KAN convs, with statistics",
                              description="Runs the model on images and writes OUT/summary.csv (per KAN conv: "
                              "nonlinearity, inputs outside the family's domain, input percentiles), one PNG per "
                              "layer of its strongest learned functions over the inputs it saw, and OUT/report.md.")
    _common(p, samples=64, batch_size=16)
    p.add_argument("--layers", metavar="PATTERN",
                   help="only the KAN convs whose names match (shell-style wildcards, e.g. 'layer1.*')")
    p.add_argument("--top", type=arguments.whole("--top", 1), default=16, help="strongest edges drawn per layer (16)")
    p.set_defaults(func=_inspect)

    p = subparsers.add_parser("prune", help="make a model's KAN convs smaller, within a metric budget",
                              description="Structured pruning: near-linear channels keep only their base branch, "
                              "layers lose bases they do not use, linear layers become plain convs. Checks top-1 (or "
                              "mIoU) on DIR/val (or DIR) before and after, stops at --max-drop, writes a hub-ready "
                              "folder to OUT and prints parameters, GFLOPs and CPU forward time before and after.")
    _common(p, samples=256, batch_size=32)
    p.add_argument("--max-drop", type=arguments.number("--max-drop", 0), default=0.01,
                   help="largest drop of the metric allowed, as a fraction (0.01: one percentage point)")
    p.add_argument("--device", type=arguments.device,
                   help="device of the evaluations: cpu, cuda or cuda:N (timing is on the CPU)")
    p.set_defaults(func=_prune)
