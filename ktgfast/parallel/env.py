"""Process-group facts from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or a c10d rendezvous,
``TORCHELASTIC_RESTART_COUNT``), and the process group itself: gloo on CPU,
NCCL on CUDA."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart: int = 0  # how often torchrun restarted the job's workers (--max-restarts)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistEnv":
        """The environment's ranks; with ``WORLD_SIZE > 1`` the default process
        group is initialised (once) with the backend that fits ``device``."""
        try:
            env = cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                      int(os.environ.get("LOCAL_RANK", 0)),
                      int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)))
        except ValueError as exc:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK / TORCHELASTIC_RESTART_COUNT must be "
                             f"integers ({exc})") from None
        if env.world_size > 1 and not dist.is_initialized():
            cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
            if cuda:
                torch.cuda.set_device(env.local_rank)
            _init_process_group("nccl" if cuda else "gloo", env)
        return env

    def device(self, name: str) -> str:
        """``cuda`` under torchrun means this process's GPU, ``cuda:LOCAL_RANK``."""
        if self.world_size > 1 and name in ("cuda", "auto") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return name


def _init_process_group(backend: str, env: DistEnv) -> None:
    """``init_process_group`` from torchrun's environment.  After a restart
    (``--max-restarts``) the workers' keys get a prefix of their attempt:
    torchrun's agent keeps one store for all attempts and (torch 2.x) the
    workers' process group shares it without a prefix, so a restarted rank
    reads the addresses the dead attempt published and gloo's or NCCL's
    connection is refused (pytorch/pytorch#167288)."""
    if not (env.restart and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"):
        dist.init_process_group(backend)
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env.world_size,
                          is_master=False)
    dist.init_process_group(backend, store=dist.PrefixStore(f"ktgfast/attempt_{env.restart}", store),
                            rank=env.rank, world_size=env.world_size)


def shutdown() -> None:
    """Destroy the default process group (if any) while the interpreter is
    fully alive.  Trainers sit in reference cycles, so their DDP wrappers --
    and through them gloo's process group and its worker threads -- would
    otherwise be freed during interpreter finalisation, where a worker thread
    that needs the GIL is unwound and aborts the process ("terminate called
    without an active exception"; pytorch/pytorch#179291 describes the same
    teardown order).  Collect first, so nothing holds the group, then destroy."""
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


__all__ = ["DistEnv", "shutdown"]
