"""The recipe, tracking and Hugging Face data options of ``kanzoo finetune`` and ``kanzoo segment``.

Every recipe option defaults to "not given": a new run takes kanzoo's default, ``--resume`` the run's recorded value.
"""

from __future__ import annotations

import argparse
from typing import Any

from kanzoo.tasks.hfdata import HFOptions
from kanzoo.tasks.recipe import SCHEDULERS, Recipe
from kanzoo.tasks.tracking import LOGGERS

from . import arguments

_NO_LOG = "none"


def _log_names(text: str) -> list[str]:
    """``--log``: tensorboard, wandb, a comma-separated list of them, or none."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in (*LOGGERS, _NO_LOG)]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expects {', '.join(LOGGERS)} or {_NO_LOG} (a comma-separated list or "
                                         f"the option repeated), got {text!r}")
    return [name for name in names if name != _NO_LOG]


def add_options(parser: argparse.ArgumentParser, classification: bool) -> None:
    """Add the recipe, tracking and Hugging Face options (``classification``: also Mixup, CutMix, smoothing)."""
    group = parser.add_argument_group("recipe (timm's implementations; --resume keeps the run's values)")
    group.add_argument("--opt", type=arguments.non_empty("--opt"),
                       help="a timm optimizer (timm.optim.list_optimizers(): adamw, sgd, lamb, lion...); default: "
                            "AdamW on every trainable parameter")
    group.add_argument("--sched", choices=SCHEDULERS,
                       help="a timm schedule, stepped per update; default: cosine decay to 1%% per step")
    group.add_argument("--warmup-epochs", type=arguments.whole("--warmup-epochs", 0),
                       help="linear warmup epochs (timm's schedule; cosine unless --sched)")
    group.add_argument("--layer-decay", type=arguments.positive("--layer-decay"),
                       help="layer-wise learning-rate decay F (0 < F <= 1) over the model's group_matcher layers")
    group.add_argument("--clip-grad", type=arguments.positive("--clip-grad"), metavar="NORM",
                       help="clip the gradients' total norm to NORM")
    group.add_argument("--grad-accum", type=arguments.whole("--grad-accum", 1), metavar="N",
                       help="accumulate the gradients of N batches per update (1)")
    group.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                       help="keep an exponential moving average of the weights (timm's ModelEmaV3), evaluated each "
                            "epoch (ema_ columns) and saved as best when it is better")
    group.add_argument("--ema-decay", type=arguments.fraction("--ema-decay"), metavar="D",
                       help="the EMA's decay (0.9998, with timm's warmup)")
    if classification:
        group.add_argument("--mixup", type=arguments.number("--mixup", 0), metavar="ALPHA",
                           help="Mixup alpha (timm's Mixup; the loss becomes soft-target cross-entropy)")
        group.add_argument("--cutmix", type=arguments.number("--cutmix", 0), metavar="ALPHA",
                           help="CutMix alpha (with --mixup: one of the two per batch)")
        group.add_argument("--label-smoothing", type=arguments.number("--label-smoothing", 0), metavar="E",
                           help="label smoothing (0 <= E < 1)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="train in the channels-last memory layout")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="train through torch.compile (the saved weights are the plain module's)")
    group.add_argument("--log", "--log-with", dest="log", action="append", type=_log_names, metavar="TRACKER",
                       help="track the run with tensorboard and/or wandb (offline unless WANDB_MODE is set); "
                            "repeatable or comma-separated; none turns a resumed run's trackers off; under torchrun "
                            "write --log-with (torchrun reads --log as an abbreviation of its --log-dir)")
    data = parser.add_argument_group("Hugging Face data (--data hf:NAME_OR_PATH)")
    data.add_argument("--hf-config", type=arguments.non_empty("--hf-config"), help="the Hub data set's configuration")
    data.add_argument("--hf-image-column", type=arguments.non_empty("--hf-image-column"),
                      help="the image column (default: the only datasets.Image column)")
    if classification:
        data.add_argument("--hf-label-column", type=arguments.non_empty("--hf-label-column"),
                          help="the label column (default: the only ClassLabel column)")
    else:
        data.add_argument("--hf-mask-column", type=arguments.non_empty("--hf-mask-column"),
                          help="the mask column (default: the Image column named like a mask)")


def task_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``recipe`` and ``hf`` keyword arguments of ``finetune``/``segment`` from the parsed options."""
    log = None if args.log is None else [name for names in args.log for name in names]
    recipe = Recipe(opt=args.opt, sched=args.sched, warmup_epochs=args.warmup_epochs, layer_decay=args.layer_decay,
                    clip_grad=args.clip_grad, grad_accum=args.grad_accum, ema=args.ema, ema_decay=args.ema_decay,
                    mixup=getattr(args, "mixup", None), cutmix=getattr(args, "cutmix", None),
                    label_smoothing=getattr(args, "label_smoothing", None), channels_last=args.channels_last,
                    compile=args.compile, log=log)
    hf = HFOptions(config=args.hf_config, image_column=args.hf_image_column,
                   label_column=getattr(args, "hf_label_column", None), mask_column=getattr(args, "hf_mask_column", None))
    return {"recipe": recipe, "hf": hf}
