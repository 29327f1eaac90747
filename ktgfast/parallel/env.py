"""Process-group facts from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or a c10d rendezvous), and
the process group itself: gloo on CPU, NCCL on CUDA."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistEnv":
        """The environment's ranks; with ``WORLD_SIZE > 1`` the default process
        group is initialised (once) with the backend that fits ``device``."""
        try:
            env = cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                      int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError as exc:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({exc})") from None
        if env.world_size > 1 and not dist.is_initialized():
            cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
            if cuda:
                torch.cuda.set_device(env.local_rank)
            dist.init_process_group("nccl" if cuda else "gloo")
        return env

    def device(self, name: str) -> str:
        """``cuda`` under torchrun means this process's GPU, ``cuda:LOCAL_RANK``."""
        if self.world_size > 1 and name in ("cuda", "auto") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return name


__all__ = ["DistEnv"]
