"""Training on many processes with ``torch.distributed`` (launched by
``torchrun``): the process-group facts, DDP wrapping of learning nodes, and
exact sharded evaluation.  Data parallel: every rank holds the whole graph,
each learning node is a ``DistributedDataParallel`` module (frozen, EMA and
ensemble nodes are not: DDP refuses modules without trainable parameters),
batches are sharded by the loaders' deterministic sharding.  Node parallel
(``--placement spread``, ``spread.py``, docs/node_parallel.md): each rank
trains its own nodes on the same batch, exchanging their outputs with one
all-gather per step."""
from .ddp import OutputsForward, ddp_forward
from .env import DistEnv
from .eval import all_reduce_sum, eval_shard
from .spread import MeshGroups, NodePlacement, OutputExchange

__all__ = ["DistEnv", "MeshGroups", "NodePlacement", "OutputExchange", "OutputsForward", "all_reduce_sum",
           "ddp_forward", "eval_shard"]
