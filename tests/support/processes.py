"""Real multi-process runs for the distributed tests: ranks spawned with
``torch.multiprocessing`` on 127.0.0.1 (gloo, one thread each)."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        fn(rank, world, *args)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes; an exception in
    any rank fails the call (``mp.spawn`` re-raises it with the rank)."""
    mp.spawn(_rank_main, args=(world, free_port(), fn, args), nprocs=world, join=True)


__all__ = ["free_port", "spawn"]
