"""Supervised KTG (Minami et al. 2020; ensembles, attention maps and ABN of
the thesis ch. 4; docs/methods.md#sources; mixup batches): every node forwards the same batch once,
one fused call computes all edges, one backward of Σ_t L_t, every optimizer
steps.

Because every edge's source is detached, node t's parameters receive gradient
only from its own loss L_t, so one backward of the sum is Algorithm 1 of
Minami et al. 2020.  The step reads nothing back from the device.
"""
from __future__ import annotations

import contextlib

import torch

from ... import ops
from ...parallel import ddp_forward
from ...edges import AttentionEdgeTable, EdgeTable
from ...graph import resolve_graph, validate
from ...ops import gated_edge_loss
from ..build import epoch_scheduler, make_train_loader
from ..lowering import EnsembleNode, Slots
from ..mixup_loss import MixedTargetEdges
from ..nodes import NodeModels
from .base import Step


def load_data(run, data):
    """A dataset by name (with the run's data flags), or the one given."""
    from ...data import get_dataset

    cfg = run.config
    if not isinstance(data, str):
        return data
    return get_dataset(data, root=cfg.data_root, download=cfg.download, val_size=cfg.val_size, seed=0)


def graph_of(graph, graph_params: dict):
    """A graph from a preset name or YAML path (with parameters), validated."""
    from ...models import model_options

    graph = resolve_graph(graph, **graph_params) if isinstance(graph, str) else graph
    return validate(graph, known_models=model_options)


# config.placement -> the step class that runs it ("module:class"; docs/node_parallel.md)
PLACEMENT_STEPS = {"replicate": "ktgfast.train.steps.ktg:KTGStep",
                   "spread": "ktgfast.train.steps.spread:SpreadStep"}


def placement_class(config):
    import importlib

    module, name = PLACEMENT_STEPS[config.placement].split(":")
    return getattr(importlib.import_module(module), name)


class KTGStep(Step):
    def __new__(cls, run, **options):
        # --method ktg is one name for both placements: the loop builds KTGStep,
        # which becomes the placement's strategy (replicate: this class).
        if cls is KTGStep:
            cls = placement_class(run.config)
        return super().__new__(cls)

    @classmethod
    def prepare(cls, run, graph, data, graph_params, options):
        strategy = placement_class(run.config)
        if cls is KTGStep and strategy is not KTGStep:
            return strategy.prepare(run, graph, data, graph_params, options)
        return graph_of(graph, graph_params), load_data(run, data)

    def __init__(self, run):
        super().__init__(run)
        cfg, graph = run.config, run.graph
        self.graph = graph
        self.mixup = self._mixup(run)
        nodes = NodeModels(run, graph)
        self.names, self.learning, self.models = nodes.names, nodes.learning, nodes.models
        self.optimizers, self.lr = nodes.optimizers, nodes.lr
        if cfg.sync_bn and self.device.type != "cuda":
            raise ValueError("config.sync_bn = True (--sync-bn): SyncBatchNorm runs only on CUDA devices; "
                             "on CPU each rank's BatchNorm normalises with its own batch and the running "
                             "statistics are rank 0's (docs/methods.md); drop --sync-bn")
        self.slots = Slots(graph, self.models, self.learning)
        self.ensembles = self.slots.ensembles
        self.forwards = [self._forward_fn(m, i) for i, m in enumerate(self.models)]
        self.schedulers = [epoch_scheduler(o, cfg, run.data) for o in self.optimizers]
        self.table = EdgeTable(self.slots.edge_specs, self.slots.count, self.device)
        self.att_table = (AttentionEdgeTable(self.slots.attention_specs, len(self.names), self.device)
                          if self.slots.maps else None)
        self.slot_owner = torch.tensor(self.slots.owner, dtype=torch.long, device=self.device)
        self.mixed_edges = (MixedTargetEdges(self.slots.edge_specs, self.slots.count, self.device)
                            if self.mixup is not None else None)
        self.loader_name, self.train_loader = make_train_loader(run, *self.data_shard())
        self.steps_per_epoch = len(self.train_loader)
        self.num_periods = cfg.epochs
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.images_per_step = cfg.batch_size * run.dist.world_size  # every rank its own batch

    # ------------------------------------------------------------------ setup
    def _mixup(self, run):
        """The batch mixer of ``config.mixup`` (docs/mixup.md), checked before training."""
        from ...data.mixup import POLICIES, Mixup, resolve_superclass_map

        cfg = run.config
        if cfg.mixup == "none":
            return None
        smap = (resolve_superclass_map(run.data, cfg.superclass_map, cfg.mixup)
                if POLICIES[cfg.mixup].uses_superclasses else None)
        return Mixup(cfg.mixup, alpha=cfg.mixup_alpha, superclass_map=smap, seed=cfg.seed,
                     rank=self.data_shard()[0], device=run.device)

    def data_shard(self) -> tuple[int, int]:
        """``(shard, shards)`` of the training batches this rank sees: under
        torchrun its rank of WORLD_SIZE (data parallel)."""
        return self.run.dist.rank, self.run.dist.world_size

    def _forward_fn(self, model, i: int):
        """What the step calls for node ``i``: ``forward_outputs`` (logits,
        attention map, attention-branch logits) where maps or an attention
        branch are needed, else the plain forward; a learning node's through
        DDP under torchrun (``ktgfast.parallel``); compiled on request."""
        if isinstance(model, EnsembleNode):
            return None
        outputs = self.slots.wants_outputs[i]
        if self.run.dist.enabled and self.learning[i]:
            fn = ddp_forward(model, outputs, self.device, sync_bn=self.config.sync_bn)
        else:
            fn = model.forward_outputs if outputs else model
        return torch.compile(fn) if self.config.compile else fn

    # ----------------------------------------------------------------- batches
    def steps_in_period(self, period: int) -> int:
        return self.steps_per_epoch

    def begin_period(self, period: int) -> None:
        self.train_loader.set_epoch(period)
        if self.mixup is not None:
            self.mixup.set_epoch(period)

    def batches(self, period: int):
        for x, y, _ in self.train_loader:
            if self.mixup is not None:  # every node sees the same mixed batch
                x, y = self.mixup(x, y)
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    # -------------------------------------------------------------------- step
    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(S, B, C)`` logits of every slot (see :class:`Slots`) and ``(M, B, H, W)``
        attention maps (None without attention edges).  Frozen nodes run in eval
        mode without gradient."""
        logits: list = [None] * len(self.names)
        maps: list = [None] * len(self.names)
        aux = []
        for i, (fwd, learns) in enumerate(zip(self.forwards, self.learning)):
            if fwd is None:
                continue
            with contextlib.nullcontext() if learns else torch.no_grad():
                out = fwd(x)
            if not self.slots.wants_outputs[i]:
                logits[i] = out
                continue
            logits[i], maps[i] = out.logits, out.attention
            if self.slots.aux[i] is not None:
                aux.append(out.aux_logits)
        return stack_outputs(logits, self.slots.ensembles, aux, maps, bool(self.slots.maps))

    def node_losses(self, x: torch.Tensor, y) -> torch.Tensor:
        """``(M,)`` loss of every node on images ``x`` with labels ``y``:
        ``(B,)`` int64, or the ``MixedTargets`` of a mixup batch."""
        with self.run.autocast():
            logits, maps = self.forward_all(x)
        progress = self.run.progress()
        reduction = self.graph.reduction
        if not isinstance(y, torch.Tensor):  # MixedTargets: soft-target label edges (mixup_loss.py)
            slot_loss = self.mixed_edges(logits, y, progress, reduction)
            y = y.dominant
        else:
            slot_loss = gated_edge_loss(logits, y, self.table, progress, reduction).node_loss
        # Per node: its slots' losses (attention-branch CE included) + attention edges.
        node_loss = torch.zeros(len(self.names), dtype=slot_loss.dtype, device=self.device)
        node_loss = node_loss.index_add(0, self.slot_owner, slot_loss)
        if maps is not None:
            att = ops.attention_crop_loss(maps, logits[:len(self.names)], y, self.att_table, progress,
                                          self.slots.crop_sizes, reduction, self.graph.attention_pull)
            node_loss = node_loss + att.node_loss.to(node_loss.dtype)
        return node_loss

    def train_step(self, x: torch.Tensor, y) -> torch.Tensor:
        from ..update import update

        node_loss = self.node_losses(x, y)
        update(self.optimizers, self.run.scaler, node_loss.sum())
        return node_loss.detach()


__all__ = ["KTGStep", "PLACEMENT_STEPS", "graph_of", "load_data", "placement_class"]


def stack_outputs(logits: list, ensembles: dict, extra: list, maps: list, want_maps: bool):
    """The step's ``(slots, B, C)`` logits and ``(M, B, H, W)`` maps (or None):
    ensemble slots become the mean of their members' logits, ``extra`` (the
    attention-branch slots) follows the nodes, and a node without a map gets
    zeros (no attention edge reads it)."""
    for i, members in ensembles.items():
        logits[i] = torch.stack([logits[j] for j in members]).mean(0)
    z = torch.stack(logits + extra)
    if not want_maps:
        return z, None
    ref = next(m for m in maps if m is not None)
    return z, torch.stack([m if m is not None else torch.zeros_like(ref) for m in maps])
