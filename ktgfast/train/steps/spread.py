"""Node-parallel KTG (``--placement spread``; docs/node_parallel.md): each
rank trains its own nodes of the graph on the same batch.

Per step, on every rank: the forwards of its own model nodes; ONE
all-gather of their logits (and attention maps when attention edges exist,
``ktgfast.parallel.spread.OutputExchange``); ensemble nodes as the mean of
their members' gathered logits; the fused edge op for the edges into its own
nodes only; one backward; its own optimizers step.  Every edge's source is
detached (Minami et al. 2020, Algorithm 1: node t's parameters receive
gradient only from its own loss L_t), so node t's update needs the other
nodes' outputs as values only, and the step equals the single-process step.

Every rank holds every node's model (as data parallel does): the nodes of
other ranks are refreshed at each period's end (parameters, buffers and
optimizer state broadcast from their owner), so evaluation (sharded over
ranks, counts summed), the checkpoint rank 0 writes and a resume see the
whole graph unchanged.  With more ranks than model nodes the ranks form a
(data x node) mesh: the replicas of a node shard train on batch shards and
all-reduce gradients with DDP over the mesh's data group.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from ...edges import AttentionEdgeTable, EdgeTable
from ...parallel import DistEnv
from ...parallel.spread import (MeshGroups, NodePlacement, OutputExchange, broadcast_module,
                                broadcast_optimizer)
from ..lowering import EnsembleNode
from ..mixup_loss import MixedTargetEdges
from .ktg import KTGStep, graph_of, load_data, stack_outputs


class SpreadStep(KTGStep):
    @classmethod
    def prepare(cls, run, graph, data, graph_params, options):
        graph = graph_of(graph, graph_params)
        NodePlacement.of(graph, run.dist.world_size)  # refusals before the data loads
        return graph, load_data(run, data)

    def __init__(self, run):
        dist_env: DistEnv = run.dist
        self.placement = NodePlacement.of(run.graph, dist_env.world_size)
        self.groups = MeshGroups(self.placement, dist_env.rank, dist_env.world_size, run.device)
        if run.config.sync_bn and self.placement.data_replicas == 1:
            raise ValueError("config.sync_bn = True (--sync-bn) with --placement spread and no data "
                             "replicas: every rank runs its nodes on the whole batch, so BatchNorm is "
                             "already that of one process; drop --sync-bn")
        super().__init__(run)  # every node's model on every rank; forwards built below
        owner, me = self.placement.owner, self.groups.node_rank
        self.own = [owner[i] == me for i in range(len(self.names))]
        if dist_env.enabled:  # rank 0's initial weights everywhere: the single process's
            for m in self.models:
                if not isinstance(m, EnsembleNode):
                    broadcast_module(m, 0, self.device)
        self.forwards = [self._own_forward(m, i) for i, m in enumerate(self.models)]
        learning_nodes = [i for i, learns in enumerate(self.learning) if learns]
        self.node_optimizers = dict(zip(learning_nodes, self.optimizers))
        self.own_optimizers = [o for i, o in self.node_optimizers.items() if self.own[i]]
        self.exchange = OutputExchange(self.placement, me, self.groups.node, bool(self.slots.maps))
        # The edge op for this rank's destinations only (a slot's owner is its node).
        mine = [e for e in self.slots.edge_specs if self.own[self.slots.owner[e.dst]]]
        self.table = EdgeTable(mine, self.slots.count, self.device)
        if self.att_table is not None:
            self.att_table = AttentionEdgeTable([e for e in self.slots.attention_specs if self.own[e.dst]],
                                                len(self.names), self.device)
        if self.mixed_edges is not None:
            self.mixed_edges = MixedTargetEdges(mine, self.slots.count, self.device)
        self.images_per_step = self.config.batch_size * self.placement.data_replicas

    # ------------------------------------------------------------------ setup
    def _forward_fn(self, model, i: int):
        return None  # built by _own_forward once every rank holds rank 0's weights

    def _own_forward(self, model, i: int):
        """This rank's node ``i``: its plain or ``forward_outputs`` forward,
        through DDP over the mesh's data group when the shard has replicas."""
        if isinstance(model, EnsembleNode) or not self.own[i]:
            return None
        outputs = self.slots.wants_outputs[i]
        if self.groups.data is not None and self.learning[i]:
            from torch import nn
            from torch.nn.parallel import DistributedDataParallel

            from ...parallel import OutputsForward

            if self.config.sync_bn:
                nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=self.groups.data)
            ids = [self.device.index] if self.device.type == "cuda" else None
            fn = DistributedDataParallel(OutputsForward(model) if outputs else model, device_ids=ids,
                                         process_group=self.groups.data)
        else:
            fn = model.forward_outputs if outputs else model
        return torch.compile(fn) if self.config.compile else fn

    def data_shard(self) -> tuple[int, int]:
        """The ranks of one data replica see the same batches."""
        return self.groups.data_rank, self.placement.data_replicas

    # -------------------------------------------------------------------- step
    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As :meth:`KTGStep.forward_all`, with the other ranks' nodes' outputs
        from the exchange (values, no autograd history)."""
        m = len(self.names)
        logits: list = [None] * m
        maps: list = [None] * m
        aux: dict = {}
        for i, fwd in enumerate(self.forwards):
            if fwd is None:
                continue
            with contextlib.nullcontext() if self.learning[i] else torch.no_grad():
                out = fwd(x)
            if not self.slots.wants_outputs[i]:
                logits[i] = out
                continue
            logits[i], maps[i] = out.logits, out.attention
            if self.slots.aux[i] is not None:
                aux[i] = out.aux_logits
        self.exchange.exchange(logits, maps)
        # attention-branch slots: only their own node's label edges read them
        extra = [aux[i] if i in aux else torch.zeros_like(logits[i])
                 for i in range(m) if self.slots.aux[i] is not None]
        return stack_outputs(logits, self.slots.ensembles, extra, maps, bool(self.slots.maps))

    def train_step(self, x: torch.Tensor, y) -> torch.Tensor:
        """The losses of this rank's nodes (0 for the others: their owners book
        them; the run loop sums the losses over ranks, see :meth:`loss_replicas`)."""
        from ..update import update

        node_loss = self.node_losses(x, y)
        if self.own_optimizers:  # a rank of frozen nodes only has nothing to update
            update(self.own_optimizers, self.run.scaler, node_loss.sum())
        return node_loss.detach()

    # ----------------------------------------------------------------- periods
    def loss_replicas(self) -> int:
        """Each node's loss is booked by its owners only (one per data replica)."""
        return self.placement.data_replicas

    def end_training_period(self) -> None:
        """Schedules step (every optimizer, so every rank's copies agree), then
        every learning node's weights, buffers and optimizer state go from its
        owner (data replica 0 of its shard = global rank ``owner``) to every
        rank."""
        with warnings.catch_warnings():
            # the other ranks' nodes' optimizers never step here; their schedules
            # still must, so that this rank's copies (and rank 0's checkpoint) agree
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            super().end_training_period()
        if not self.run.dist.enabled:
            return
        for i, opt in self.node_optimizers.items():
            src = self.placement.owner[i]
            broadcast_module(self.models[i], src, self.device)
            broadcast_optimizer(opt, src, self.device)

    def resolved(self) -> dict:
        out = super().resolved()
        out["placement"] = self.placement.describe(self.names)
        return out


__all__ = ["SpreadStep"]
