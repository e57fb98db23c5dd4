"""Sub-commands over :mod:`kanzoo.tasks`: finetune, segment, eval, predict, export, quickstart."""

from __future__ import annotations

import argparse
import ast
import functools
import json
import sys
from typing import Any, Callable

from kanzoo import runtime
from kanzoo.tasks import TaskError, evaluate, export_model, finetune, predict, quickstart, segment
from kanzoo.tasks.export import FORMATS

from . import arguments, training

_MODEL_HELP = ("registered name[.tag] (kanzoo list), kanify:<timm name>[.tag] (a timm CNN with KAN convs), a timm "
               "name (the CNN itself), hf-hub:org/repo, or a folder written by finetune/segment")


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print task errors as one line and exit with their status (2 for bad input, 1 for failures at run time)."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except TaskError as err:
            print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
            return err.exit_code
    return run


def _allocator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allocator", choices=runtime.ALLOCATORS, default="keep",
                        help="keep: make glibc's malloc keep freed memory for the next step instead of returning "
                             "it to the system, which spares each step's large tensors their page faults "
                             "(default); default: leave malloc as it is")


def _model_args(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings (checked by ``arguments.model_arg``) as keyword arguments, the values parsed as Python
    literals when they are one (``2``, ``0.5``, ``[4, 'M']``), else kept as strings."""
    kwargs: dict[str, Any] = {}
    for pair in pairs or []:
        key, _, text = pair.partition("=")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            kwargs[key] = text
    return kwargs


def _training_options(parser: argparse.ArgumentParser, epochs: int, batch_size: int, weight_decay: float) -> None:
    parser.add_argument("--model", required=True, type=arguments.model_source(), help=_MODEL_HELP)
    parser.add_argument("--data", required=True, type=arguments.non_empty("--data"),
                        help="data folder (layouts in docs/training.md) or hf:NAME_OR_PATH (a Hugging Face data set)")
    parser.add_argument("--out", required=True, type=arguments.non_empty("--out"), help="output folder of the run")
    parser.add_argument("--epochs", type=arguments.whole("--epochs", 1), default=epochs,
                        help=f"epochs to train in total (default {epochs})")
    parser.add_argument("--batch-size", type=arguments.whole("--batch-size", 1), default=batch_size,
                        help=f"per process (default {batch_size})")
    parser.add_argument("--lr", type=arguments.positive("--lr"), default=1e-3,
                        help="peak AdamW learning rate, cosine decay (1e-3)")
    parser.add_argument("--weight-decay", type=arguments.number("--weight-decay", 0), default=weight_decay,
                        help=f"AdamW ({weight_decay})")
    parser.add_argument("--img-size", type=arguments.image_size,
                        help="square input size (default: the model's pretrained cfg)")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                        help="start from pretrained weights (default: when the registry has them)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 on GPU, bfloat16 on CPU)")
    parser.add_argument("--workers", type=arguments.whole("--workers", 0),
                        help="data-loading processes (default: up to 4)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed (0)")
    parser.add_argument("--val-split", type=arguments.fraction("--val-split"),
                        help="hold out this fraction when there is no val/ folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    parser.add_argument("--push-to-hub", metavar="REPO", type=arguments.repo_id("--push-to-hub"),
                        help="push the best model to this Hugging Face repo")
    parser.add_argument("--device", type=arguments.device,
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bars")
    parser.add_argument("--model-arg", action="append", metavar="KEY=VALUE", type=arguments.model_arg,
                        help="extra model argument, repeatable (e.g. --model-arg width=0.25)")
    parser.add_argument("--kan-l1", type=arguments.number("--kan-l1", 0), metavar="LAMBDA",
                        help="KAN sparsity regularisation: adds LAMBDA * (L1 + MU * entropy) of the KAN convs' basis "
                             "weights to the loss, logged in metrics.csv (default 0: off, or the resumed run's; see "
                             "docs/inspect.md)")
    parser.add_argument("--kan-entropy", type=arguments.number("--kan-entropy", 0), metavar="MU",
                        help="weight of the entropy term inside --kan-l1's regularisation (default 0, or the resumed "
                             "run's)")
    _allocator_option(parser)


def _common_training(args: argparse.Namespace) -> dict[str, Any]:
    return dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                img_size=args.img_size, pretrained=args.pretrained, amp=args.amp, workers=args.workers,
                seed=args.seed, resume=args.resume, overwrite=args.overwrite, val_split=args.val_split,
                push_to_hub=args.push_to_hub, device=args.device, progress=args.progress,
                model_kwargs=_model_args(args.model_arg), kan_l1=args.kan_l1, kan_entropy=args.kan_entropy,
                **training.task_kwargs(args))


@_guarded
def _finetune(args: argparse.Namespace) -> int:
    runtime.configure_allocator(args.allocator)
    finetune(args.model, args.data, args.out, freeze_backbone=args.freeze_backbone, **_common_training(args))
    return 0


@_guarded
def _segment(args: argparse.Namespace) -> int:
    runtime.configure_allocator(args.allocator)
    names = [name.strip() for name in args.class_names.split(",")] if args.class_names else None
    segment(args.model, args.data, args.out, num_classes=args.num_classes, class_names=names,
            overlays=args.overlays, pretrained_encoder=args.pretrained_encoder, **_common_training(args))
    return 0


@_guarded
def _eval(args: argparse.Namespace) -> int:
    metrics = evaluate(args.model, args.data, batch_size=args.batch_size, img_size=args.img_size,
                       workers=args.workers, amp=args.amp, device=args.device, progress=args.progress)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            print(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")
    return 0


@_guarded
def _predict(args: argparse.Namespace) -> int:
    failed = 0
    for result in predict(args.model, args.images, top_k=args.top_k, out_dir=args.out, img_size=args.img_size,
                          device=args.device):
        if result.error:
            failed += 1
            print(f"{result.image}: {result.error}", file=sys.stderr)
        elif result.mask is not None:
            print(f"{result.image}: mask saved to {result.mask}")
        else:
            print(f"{result.image}:")
            for label, prob in result.top:
                print(f"  {prob:7.2%}  {label}")
    return 1 if failed else 0


@_guarded
def _export(args: argparse.Namespace) -> int:
    report = export_model(args.model, args.out, format=args.format, img_size=args.img_size)
    print(f"exported {args.model} as {report.format} to {report.path} (input N x "
          f"{' x '.join(map(str, report.input_shape))}, any N); checked against PyTorch: max abs difference "
          f"{report.max_abs_diff:.2e}")
    return 0


@_guarded
def _quickstart(args: argparse.Namespace) -> int:
    runtime.configure_allocator(args.allocator)
    report = quickstart(args.out, epochs=args.epochs, overwrite=args.overwrite, seed=args.seed,
                        progress=args.progress)
    print(f"\nquick start done in {report.seconds:.0f} s: the reloaded model classifies {report.top1:.1%} of "
          f"{report.images} validation images correctly")
    print(f"  data set            {report.data}")
    print(f"  metrics per epoch   {report.run / 'metrics.csv'} (curves: {report.run / 'curves.png'})")
    print(f"  hub-ready model     {report.model_dir} (kanzoo.create_model('local-dir:{report.model_dir}'))")
    print(f"  resumable state     {report.run / 'last.pt'}")
    print(f"next: kanzoo predict {report.model_dir} {report.data / 'val' / 'checkerboard' / '0000.png'}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the task sub-commands to the ``kanzoo`` parser."""
    p = subparsers.add_parser("finetune", help="fine-tune a classifier on an ImageFolder tree",
                              description="Fine-tune a classifier; writes metrics.csv, curves.png, best/ "
                              "(hub-ready) and last.pt (resumable) to --out. Under torchrun: DDP.")
    _training_options(p, epochs=10, batch_size=32, weight_decay=0.05)
    p.add_argument("--freeze-backbone", action="store_true", help="train only the classifier head")
    training.add_options(p, classification=True)
    p.set_defaults(func=_finetune)

    p = subparsers.add_parser("segment", help="train a segmentation model on images/ + masks/ folders",
                              description="Train UKANet/U2KANet with Dice + cross-entropy; writes metrics.csv "
                              "(val_miou, val_dice, per class), overlays/, curves.png, best/ and last.pt.")
    _training_options(p, epochs=20, batch_size=8, weight_decay=1e-4)
    p.add_argument("--num-classes", type=arguments.whole("--num-classes", 1),
                   help="classes (default: largest mask value + 1)")
    p.add_argument("--class-names", type=arguments.non_empty("--class-names"),
                   help="comma-separated names, one per class index")
    p.add_argument("--overlays", type=arguments.whole("--overlays", 0), default=4,
                   help="validation images to draw predictions for (4)")
    p.add_argument("--pretrained-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="start the classification encoder of a UKANet from its pretrained weights (default: when "
                        "the registry has weights for it that fit the model arguments)")
    training.add_options(p, classification=False)
    p.set_defaults(func=_segment)

    p = subparsers.add_parser("eval", help="top-1/top-5 of a classifier or mIoU of a segmentation model",
                              description="Evaluate on DIR/val (or DIR) in the layout finetune/segment read.")
    p.add_argument("model", type=arguments.model_source("model"), help=_MODEL_HELP)
    p.add_argument("--data", required=True, type=arguments.non_empty("--data"), help="data folder")
    p.add_argument("--batch-size", type=arguments.whole("--batch-size", 1), default=32)
    p.add_argument("--img-size", type=arguments.image_size, help="square input size (default: the model's cfg)")
    p.add_argument("--workers", type=arguments.whole("--workers", 0), help="data-loading processes")
    p.add_argument("--amp", action="store_true", help="mixed precision")
    p.add_argument("--device", type=arguments.device, help="cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser("predict", help="top-k classes, or masks as PNG, for image files")
    p.add_argument("model", type=arguments.model_source("model"), help=_MODEL_HELP)
    p.add_argument("images", nargs="+", type=arguments.non_empty("images"), help="image files")
    p.add_argument("--top-k", type=arguments.whole("--top-k", 1), default=5, help="classes to show per image (5)")
    p.add_argument("--out", default="predictions", type=arguments.non_empty("--out"),
                   help="folder for segmentation masks (predictions)")
    p.add_argument("--img-size", type=arguments.image_size, help="square input size (default: the model's cfg)")
    p.add_argument("--device", type=arguments.device, help="cpu, cuda or cuda:N")
    p.set_defaults(func=_predict)

    p = subparsers.add_parser("export", help="export to ONNX, TorchScript or an ExportedProgram (verified)",
                              description="Export a model and check the exported file's output against PyTorch "
                              "(onnxruntime for ONNX). The batch dimension stays dynamic.")
    p.add_argument("model", type=arguments.model_source("model"), help=_MODEL_HELP)
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", required=True, type=arguments.non_empty("--out"), help="output file (.onnx, .pt, .pt2)")
    p.add_argument("--img-size", type=arguments.image_size, help="square input size (default: the model's cfg)")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("quickstart", help="fine-tune a small KAN ResNet on synthetic data in about a minute",
                              description="Writes a synthetic 4-class pattern data set, fine-tunes a small "
                              "ResKANet-18 on it, saves a hub-ready folder, reloads it and evaluates it.")
    p.add_argument("--out", default="kanzoo-quickstart", type=arguments.non_empty("--out"),
                   help="folder for data and run (kanzoo-quickstart)")
    p.add_argument("--epochs", type=arguments.whole("--epochs", 1), default=30,
                   help="epochs (30: about a minute on 2 CPU cores)")
    p.add_argument("--seed", type=arguments.seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a previous quick start run")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    _allocator_option(p)
    p.set_defaults(func=_quickstart)
