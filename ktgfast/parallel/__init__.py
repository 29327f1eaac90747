"""Training on many processes with ``torch.distributed`` (launched by
``torchrun``): the process-group facts, DDP wrapping of learning nodes, and
exact sharded evaluation.  Data parallel: every rank holds the whole graph,
each learning node is a ``DistributedDataParallel`` module (frozen, EMA and
ensemble nodes are not: DDP refuses modules without trainable parameters),
batches are sharded by the loaders' deterministic sharding."""
from .ddp import OutputsForward, ddp_forward
from .env import DistEnv
from .eval import all_reduce_sum, eval_shard

__all__ = ["DistEnv", "OutputsForward", "all_reduce_sum", "ddp_forward", "eval_shard"]
