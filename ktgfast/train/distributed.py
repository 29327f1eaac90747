"""Process-group facts from torchrun's environment.  The trainer is written
for DDP (rank-0 logging and checkpoints, per-rank seeds, sharded batches);
multi-process training itself arrives with the multi-GPU work."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "DistEnv":
        env = cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                  int(os.environ.get("LOCAL_RANK", 0)))
        if env.world_size > 1:
            raise NotImplementedError(
                f"WORLD_SIZE={env.world_size}: multi-process (DDP) graph training is not available "
                "yet; run one process per graph (searches already use one worker per device)")
        return env
