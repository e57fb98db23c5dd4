"""What a model costs: parameters, forward GFLOPs (counted on the meta device) and measured forward time."""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelCost", "count_gflops", "count_parameters", "forward_time", "model_cost"]


@dataclasses.dataclass
class ModelCost:
    """Parameters, forward GFLOPs at batch 1 and the median forward time of a batch in milliseconds."""

    params: int
    gflops: float
    forward_ms: float
    batch_size: int
    input_size: tuple[int, ...]
    threads: int


def count_parameters(model: nn.Module) -> int:
    """Every parameter of ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, input_size: Sequence[int]) -> float:
    """Forward GFLOPs at batch 1 for an input ``(C, H, W)``, counted by torch's ``FlopCounterMode`` on a copy of the
    model on the meta device (nothing is computed): convolutions and matrix products, 2 FLOPs per multiply-add.
    A KAN conv counts as the convolution over its expansion; the pointwise bases and norms are not counted."""
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, *input_size, device="meta"))
    return counter.get_total_flops() / 1e9


def forward_time(model: nn.Module, input_size: Sequence[int], *, batch_size: int = 8, repeats: int = 10,
                 warmup: int = 3) -> float:
    """The median wall time in milliseconds of ``model`` on a random batch (eval mode, no gradients), on the
    device of its parameters, after ``warmup`` calls (the first call of a fused CPU kernel compiles it)."""
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"repeats and batch_size must be at least 1 and warmup at least 0, got {repeats}, "
                         f"{batch_size} and {warmup}")
    device = next(model.parameters()).device
    x = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
    training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for index in range(warmup + repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if index >= warmup:
                    times.append((time.perf_counter() - started) * 1000)
    finally:
        model.train(training)
    return statistics.median(times)


def model_cost(model: nn.Module, input_size: Sequence[int], *, batch_size: int = 8, repeats: int = 10) -> ModelCost:
    """:class:`ModelCost` of ``model`` for inputs ``(C, H, W)``."""
    return ModelCost(count_parameters(model), count_gflops(model, input_size),
                     forward_time(model, input_size, batch_size=batch_size, repeats=repeats), batch_size,
                     tuple(input_size), torch.get_num_threads())
