"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: rank, world size and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world > 1


def setup(device: str | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, target)


def teardown(info: DistInfo) -> None:
    """Leave the process group if this run joined one."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over every process (returns it unchanged for one process)."""
    if info.enabled:
        tensor = tensor.to(info.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu()


def all_min(value: int, info: DistInfo) -> int:
    """The smallest ``value`` over every process."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.enabled:
        dist.barrier()
