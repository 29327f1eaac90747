"""Semi-supervised KTG (the thesis ch. 5; docs/methods.md#sources): a labelled and an unlabelled
batch per step, views, self-loops and EMA nodes.

One step, ``k``:

1. batch ``k`` of the labelled stream (weak view) and of the unlabelled stream
   (the views the graph's unlabelled edges name; ``ktgfast.data.semi``);
2. every node that has work forwards ONCE on the concatenation of what it
   needs -- the labelled batch (if it has a label edge) and each of its views
   -- as FixMatch (Sohn et al. 2020) does on one device, so its BatchNorm
   statistics in train mode span the labelled and unlabelled images together;
   frozen and EMA nodes run in eval mode under ``no_grad``;
3. two fused ``gated_edge_loss`` calls: the label edges on the labelled slots
   ``(nodes, B_l, C)``, every other edge on the ``(node, view)`` slots
   ``(S, B_u, C)``; node loss (eq. 5.9) = the sum of both per node;
4. the shared update, every EMA node follows its source (``ema.py``), the
   learning rate follows its per-step schedule.

Under torchrun (docs/distributed.md) both batch sizes are per rank: global
batch ``k`` is one process's batch of ``WORLD_SIZE`` times the size, rank ``r``
taking its ``r``-th part (stream batch ``k·W + r``), learning nodes are DDP
modules, EMA and frozen nodes are not (their weights follow identical
sources, or are loaded).

The schedule is iteration-based: ``iterations`` steps (default ``epochs x
eval_every``), evaluation and a checkpoint every ``eval_every`` steps (default:
one pass over the unlabelled set); an "epoch" of the metrics is one such
period.  Learning-rate schedules per step ``k`` of ``K``: ``cosine`` is
FixMatch's ``lr·cos(7πk / 16K)``, ``multistep`` multiplies by ``gamma`` at
``milestones`` (in periods; default 30/60/90 % of K), ``constant``.

The unlabelled stream's labels are ``HIDDEN_LABEL`` (-1) and go to the
unlabelled call as they are: no unlabelled edge reads a label (the correct
gate is refused there), and the CPU kernel would reject -1 if one did.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from ...edges import LABEL, EdgeTable
from ...ops import gated_edge_loss
from ..build import make_augment
from ..ema import EmaUpdater
from ..lowering import SSLSlots, has_attention_branch
from ..nodes import NodeModels
from ..update import update
from . import wants_semi_supervised
from .base import Step
from .ktg import graph_of, load_data

MU = 7  # unlabelled / labelled batch ratio when unlabeled_batch_size is None (FixMatch)


class SemiSupervisedStep(Step):
    mode = "ssl"

    @classmethod
    def prepare(cls, run, graph, data, graph_params, options):
        from ...data.semi import hide_labels, split_labeled

        cfg = run.config
        graph = graph_of(graph, graph_params)
        if not graph.semi_supervised and any(e.src != LABEL for e in graph.active_edges()):
            raise ValueError(f"graph {graph.name or '(unnamed)'!r} has edges between nodes but is not "
                             "semi-supervised; set semi_supervised: true to put them on the unlabelled "
                             "batch, or train it without labels_per_class")
        data = load_data(run, data)
        seed = cfg.seed if cfg.label_seed is None else cfg.label_seed
        if cfg.labels_per_class is None:  # every image labelled; all of them also unlabelled
            labeled, unlabeled = data.train, hide_labels(data.train)
        else:
            labeled, unlabeled = split_labeled(data.train, cfg.labels_per_class, seed)
        run.unlabeled = unlabeled
        return graph, dataclasses.replace(data, train=labeled)

    def __init__(self, run):
        super().__init__(run)
        cfg, graph = run.config, run.graph
        self.graph = graph
        self.unlabeled = run.unlabeled
        self.unlabeled_batch_size = cfg.unlabeled_batch_size or MU * cfg.batch_size
        # Under torchrun both batch sizes are per rank; one pass over the
        # unlabelled set takes WORLD_SIZE times fewer steps (docs/distributed.md).
        self.world, self.rank = run.dist.world_size, run.dist.rank
        self.eval_every = cfg.eval_every or max(
            1, len(self.unlabeled) // (self.world * self.unlabeled_batch_size))
        self.iterations = cfg.iterations or cfg.epochs * self.eval_every
        self.milestones = ([m * self.eval_every for m in cfg.milestones] if cfg.milestones is not None
                           else sorted({max(1, round(self.iterations * f)) for f in (0.3, 0.6, 0.9)}))
        nodes = NodeModels(run, graph)
        self.names, self.learning, self.models = nodes.names, nodes.learning, nodes.models
        self.optimizers, self.lr = nodes.optimizers, nodes.lr
        for i, m in enumerate(self.models):
            if self.learning[i] and has_attention_branch(m):
                raise ValueError(f"node {self.names[i]!r}: attention-branch models are not supported "
                                 "in semi-supervised graphs")
        self.slots = s = SSLSlots(graph)
        self.check_sync_bn()
        # DDP (learning nodes, under torchrun) broadcasts rank 0's weights here,
        # before the EMA nodes copy their sources below.
        self.forwards = [None if n.is_ensemble else self.node_forward(m, self.learning[i])
                         for i, (n, m) in enumerate(zip(graph.nodes, self.models))]
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, self.lr_factor) for o in self.optimizers]
        self.table = EdgeTable(s.edge_specs, s.count, self.device)
        self.slot_owner = torch.tensor(s.owner, dtype=torch.long, device=self.device)
        self.u_table = EdgeTable(s.u_specs, len(s.u_slots), self.device) if s.u_specs else None
        self.u_owner = torch.tensor(s.u_owner, dtype=torch.long, device=self.device)
        self.mask_edges = [j for j, e in enumerate(s.u_specs) if e.gate == "threshold"]
        self.mask_count = torch.zeros(len(s.u_specs), dtype=torch.long, device=self.device)
        idx = {n: i for i, n in enumerate(self.names)}
        pairs = [(self.models[i], self.models[idx[n.ema_of]]) for i, n in enumerate(graph.nodes)
                 if n.ema_of is not None]
        self.ema = EmaUpdater(pairs, cfg.ema_decay)
        self.ema.reset()  # (a resumed run loads its EMA weights from the checkpoint after this)
        self.forward_nodes = [i for i in range(len(self.names))
                              if i in s.labeled_nodes or s.node_views[i]]
        self._streams(run)
        self.num_periods = -(-self.iterations // self.eval_every)
        self.total_steps = self.iterations
        self.images_per_step = run.dist.world_size * (
            cfg.batch_size + (self.unlabeled_batch_size if self.unlabeled_stream else 0))

    def _streams(self, run) -> None:
        """The labelled stream and the unlabelled one."""
        from ...data import RandAugment
        from ...data.semi import ViewStream

        cfg, d = self.config, run.data
        self.loader_name = "tensor"
        augment = make_augment(cfg, d)
        common = dict(augment=augment, mean=d.mean, std=d.std, device=self.device)
        self.labeled_stream = ViewStream(d.train, cfg.batch_size, views=("weak",), seed=2 * cfg.seed,
                                         **common)
        views = self.slots.views
        self.unlabeled_stream = None
        if views:
            if augment is None and {"weak", "weak2"} <= set(views):
                run._print("warning: augment is none, so the weak and weak2 views are the same images")
            strong = RandAugment(n=cfg.randaugment_n, m=cfg.randaugment_m,
                                 random_magnitude=cfg.randaugment_random_magnitude)
            self.unlabeled_stream = ViewStream(self.unlabeled, self.unlabeled_batch_size, views=views,
                                               strong=strong if "strong" in views else None,
                                               seed=2 * cfg.seed + 1, **common)

    def lr_factor(self, k: int) -> float:
        """The learning-rate multiplier at step ``k`` (of ``iterations``)."""
        c = self.config
        schedule = "multistep" if c.schedule == "auto" else c.schedule  # auto: as before auto existed
        if schedule == "cosine":
            return math.cos(7 * math.pi * k / (16 * self.iterations))
        if schedule == "multistep":
            return c.gamma ** sum(k >= m for m in self.milestones)
        return 1.0

    # ----------------------------------------------------------------- periods
    def _range(self, period: int) -> tuple[int, int]:
        return (period - 1) * self.eval_every, min(period * self.eval_every, self.iterations)

    def steps_in_period(self, period: int) -> int:
        k0, k1 = self._range(period)
        return k1 - k0

    def begin_period(self, period: int) -> None:
        self.mask_count.zero_()

    def batches(self, period: int):
        k0, k1 = self._range(period)
        for k in range(k0, k1):
            # Global batch k is the stream's positions [k·W·B, (k+1)·W·B); rank r
            # takes the r-th B of them, stream batch k·W + r: the ranks' batches
            # together are one process's batch of W·B, views included.
            j = k * self.world + self.rank
            lab, yl, _ = self.labeled_stream.batch(j)
            views, yu = {}, None
            if self.unlabeled_stream is not None:
                views, yu, _ = self.unlabeled_stream.batch(j)
            yield lab["weak"], yl, views, yu

    def end_training_period(self) -> None:
        pass  # the lr follows a per-step schedule (train_step)

    def period_columns(self, steps: int) -> dict:
        mask = {}
        if self.mask_edges:  # fraction of unlabelled samples past each threshold, over all ranks
            from ...parallel.eval import all_reduce_sum

            count = all_reduce_sum(self.mask_count.clone(), self.world)
            rate = (count.double() / (steps * self.world * self.unlabeled_batch_size)).tolist()
            for j in self.mask_edges:
                e = self.slots.u_edges[j]
                mask[f"mask:{e.src}->{e.dst}"] = round(rate[j], 4)
        return mask

    # -------------------------------------------------------------------- step
    def forward_slots(self, xl, views: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Labelled logits ``(nodes, B_l, C)`` and unlabelled ``(slots, B_u, C)``
        (None where the graph has no such edges)."""
        s = self.slots
        lab: dict[int, torch.Tensor] = {}
        unl: dict[tuple[int, str], torch.Tensor] = {}
        for i in self.forward_nodes:
            labeled = i in s.labeled_nodes
            parts = ([xl] if labeled else []) + [views[v] for v in s.node_views[i]]
            x = torch.cat(parts) if len(parts) > 1 else parts[0]
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with contextlib.nullcontext() if self.learning[i] else torch.no_grad():
                z = self.forwards[i](x)
            chunks = list(z.split([p.shape[0] for p in parts]))
            if labeled:
                lab[i] = chunks.pop(0)
            for v, zv in zip(s.node_views[i], chunks):
                unl[(i, v)] = zv
        zl = torch.stack([lab[i] for i in s.labeled_nodes]) if s.labeled_nodes else None
        zu = torch.stack([unl[p] for p in s.u_slots]) if s.u_slots else None
        return zl, zu

    def train_step(self, xl: torch.Tensor, yl: torch.Tensor, views: dict,
                   yu: torch.Tensor | None) -> torch.Tensor:
        with self.run.autocast():
            zl, zu = self.forward_slots(xl, views)
        progress = self.run.progress()
        reduction = self.graph.reduction
        some = zl if zl is not None else zu
        node_loss = torch.zeros(len(self.names), device=self.device,
                                dtype=torch.float64 if some.dtype == torch.float64 else torch.float32)
        if self.slots.edge_specs:
            out = gated_edge_loss(zl, yl, self.table, progress, reduction)
            node_loss = node_loss.index_add(0, self.slot_owner, out.node_loss)
        if self.u_table is not None:
            out = gated_edge_loss(zu, yu, self.u_table, progress, reduction)
            node_loss = node_loss.index_add(0, self.u_owner, out.node_loss)
            self.mask_count += out.count
        update(self.optimizers, self.run.scaler, node_loss.sum())
        self.ema.update()
        for sch in self.schedulers:
            sch.step()
        return node_loss.detach()


__all__ = ["MU", "SemiSupervisedStep", "wants_semi_supervised"]
