"""Several training processes under torchrun (DDP): NCCL on GPUs, gloo on CPU.

One process alone (no torchrun) gets rank -1 and skips all of it: it starts no process group, and its callers make no
collective (yolov3.bookkeeping.RankAgreement agrees with itself).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from yolov3.utils import select_device


def setup_distributed(device_arg: str) -> tuple[int, int, int, torch.device]:
    """(rank, local_rank, world_size, device). Under torchrun: NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", -1))
    local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if world_size == 1:
        return -1, -1, 1, select_device(device_arg)
    use_cuda = torch.cuda.is_available() and device_arg.strip().lower() != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    # the other ranks wait while rank 0 validates; a COCO-sized validation outlasts the default timeout
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=3))
    return rank, local_rank, world_size, device


def all_reduce_max(values: torch.Tensor) -> None:
    """Replace ``values``, in place, by their elementwise maximum over the ranks: a collective, so every rank must
    call it at the same point (yolov3.bookkeeping.RankAgreement keeps that rule for train.py)."""
    dist.all_reduce(values, op=dist.ReduceOp.MAX)


def cleanup_distributed(world_size: int) -> None:
    """End the process group that :func:`setup_distributed` started (nothing for a single process)."""
    if world_size > 1:
        dist.destroy_process_group()
