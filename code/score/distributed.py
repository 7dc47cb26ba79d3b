"""Process-group plumbing shared by training and evaluation: splitting work, gathering results, clean exit."""

from __future__ import annotations

import torch


def end_processes(clean: bool) -> None:
    """Tear the process group down before the interpreter exits (main.py calls this once, after any task).

    Left to interpreter shutdown, a gloo/NCCL group can be destroyed while a peer still talks to it, and a
    process then dies with `terminate called without an active exception` (SIGABRT) after finishing its work.
    clean=True (every process finished): meet at a barrier first, then destroy. clean=False (an error, maybe on
    this process only): destroy without waiting for peers that may never come.
    """
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    if clean:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def my_share(items: list, rank: int, world: int) -> list:
    """Items rank, rank + world, ...: an even split (sizes differ by at most one) that keeps each process's
    share spread over the list."""
    return items[rank::world]


def gather_objects(objects: list) -> list:
    """Every process's list concatenated in rank order, on every process (small Python objects only)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return list(objects)
    parts: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, objects)
    return [item for part in parts for item in part]
