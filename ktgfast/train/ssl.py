"""Semi-supervised KTG (SPEC §3, thesis ch. 5): a labelled and an unlabelled
batch per step, views, self-loops and EMA nodes.

One step, ``k``:

1. batch ``k`` of the labelled stream (weak view) and of the unlabelled stream
   (the views the graph's unlabelled edges name; ``ktgfast.data.semi``);
2. every node that has work forwards ONCE on the concatenation of what it
   needs -- the labelled batch (if it has a label edge) and each of its views
   -- as FixMatch does on one device, so its BatchNorm statistics in train
   mode span the labelled and unlabelled images together; frozen and EMA
   nodes run in eval mode under ``no_grad``;
3. two fused ``gated_edge_loss`` calls: the label edges on the labelled slots
   ``(nodes, B_l, C)``, every other edge on the ``(node, view)`` slots
   ``(S, B_u, C)``; node loss (eq. 5.9) = the sum of both per node;
4. one backward of Σ_t L_t, every optimizer steps, every EMA node follows its
   source (``ema.py``), the learning rate follows its per-step schedule.

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
import time

import torch

from ..edges import LABEL, EdgeSpec, EdgeTable
from ..graph import Graph, resolve_graph
from ..graph.ssl import VIEWS, dst_view, lower_edge, src_view
from ..ops import gated_edge_loss
from .config import TrainConfig
from .ema import EmaUpdater
from .trainer import EpochLosses, Trainer

MU = 7  # unlabelled / labelled batch ratio when unlabeled_batch_size is None (FixMatch)


def wants_semi_supervised(graph, config, graph_params=None) -> bool:
    """Whether ``Trainer(graph, data, config)`` is a semi-supervised run."""
    if config is not None and config.labels_per_class is not None:
        return True
    if isinstance(graph, str):
        graph = resolve_graph(graph, **(graph_params or {}))
    return bool(getattr(graph, "semi_supervised", False))


class SSLSlots:
    """The two slot layouts of a step (``Trainer.slots`` for the labelled call).

    Labelled call: one slot per node with an active label edge, in node order.
    Unlabelled call: one slot per (node, view) some active unlabelled edge
    names, ordered by node and then view; each edge is lowered for the op
    (``ssl.lower_edge``) with a per-step coefficient ``modulation``."""

    maps = False
    crop_sizes = ()

    def __init__(self, graph: Graph):
        names = graph.node_names()
        idx = {n: i for i, n in enumerate(names)}
        m = len(names)
        self.ensembles: dict = {}
        self.aux = [None] * m
        self.wants_outputs = [False] * m
        active = graph.active_edges()
        label_edges = [e.canonical() for e in active if e.src == LABEL]
        self.u_edges = [e for e in active if e.src != LABEL]
        self.labeled_nodes = sorted({idx[e.dst] for e in label_edges})
        slot = {n: k for k, n in enumerate(self.labeled_nodes)}
        self.edge_specs = [EdgeSpec(LABEL, slot[idx[e.dst]], e.loss, e.gate.kind, e.T, e.weight, e.t2,
                                    e.gate.f, e.gate.phi, e.gate.tau) for e in label_edges]
        # EdgeTable needs >= 1 slot: a graph without label edges gets an idle one
        self.count = max(1, len(self.labeled_nodes))
        self.owner = self.labeled_nodes or [0]

        ends = {(idx[e.src], src_view(e)) for e in self.u_edges}
        ends |= {(idx[e.dst], dst_view(e)) for e in self.u_edges}
        self.u_slots = sorted(ends, key=lambda p: (p[0], VIEWS.index(p[1])))
        uslot = {p: k for k, p in enumerate(self.u_slots)}
        self.u_specs, self.u_modulation = [], []
        for e in self.u_edges:
            loss, gate, tau, mod = lower_edge(e)
            self.u_specs.append(EdgeSpec(uslot[(idx[e.src], src_view(e))], uslot[(idx[e.dst], dst_view(e))],
                                         loss, gate, e.T, e.weight, e.t2, e.gate.f, e.gate.phi, tau))
            self.u_modulation.append(mod)
        self.u_owner = [n for n, _ in self.u_slots]
        self.node_views = [[v for n, v in self.u_slots if n == i] for i in range(m)]
        self.views = [v for v in VIEWS if any(v == w for _, w in self.u_slots)]


class SemiSupervisedTrainer(Trainer):
    """``SemiSupervisedTrainer("fixmatch", "mnist5k", TrainConfig(labels_per_class=10)).fit()``;
    ``Trainer(...)`` becomes one for semi-supervised graphs."""

    def __init__(self, graph: Graph | str, data, config: TrainConfig | None = None, *,
                 resume: bool = False, graph_params: dict | None = None):
        from ..data import get_dataset
        from ..data.semi import hide_labels, split_labeled

        cfg = (config or TrainConfig()).validate()
        graph = resolve_graph(graph, **(graph_params or {})) if isinstance(graph, str) else graph
        if not graph.semi_supervised and any(e.src != LABEL for e in graph.active_edges()):
            raise ValueError(f"graph {graph.name or '(unnamed)'!r} has edges between nodes but is not "
                             "semi-supervised; set semi_supervised: true to put them on the unlabelled "
                             "batch, or train it without labels_per_class")
        data = data if not isinstance(data, str) else get_dataset(
            data, root=cfg.data_root, download=cfg.download, val_size=cfg.val_size, seed=0)
        seed = cfg.seed if cfg.label_seed is None else cfg.label_seed
        if cfg.labels_per_class is None:  # every image labelled; all of them also unlabelled
            labeled, self.unlabeled = data.train, hide_labels(data.train)
        else:
            labeled, self.unlabeled = split_labeled(data.train, cfg.labels_per_class, seed)
        self.unlabeled_batch_size = cfg.unlabeled_batch_size or MU * cfg.batch_size
        self.eval_every = cfg.eval_every or max(1, len(self.unlabeled) // self.unlabeled_batch_size)
        self.iterations = cfg.iterations or cfg.epochs * self.eval_every
        self.milestones = ([m * self.eval_every for m in cfg.milestones] if cfg.milestones is not None
                           else sorted({max(1, round(self.iterations * f)) for f in (0.3, 0.6, 0.9)}))
        super().__init__(graph, dataclasses.replace(data, train=labeled), cfg, resume=resume)
        if self.dist.world_size > 1:
            raise ValueError("semi-supervised training runs in one process; launch it without torchrun")
        for i, m in enumerate(self.models):
            if self.learning[i] and getattr(m, "has_aux_logits", False):
                raise ValueError(f"node {self.names[i]!r}: attention-branch models are not supported "
                                 "in semi-supervised graphs")
        self.total_steps = self.iterations
        self.progress_div = float(max(self.iterations - 1, 1))
        s = self.slots
        self.u_table = EdgeTable(s.u_specs, len(s.u_slots), self.device) if s.u_specs else None
        self.u_owner = torch.tensor(s.u_owner, dtype=torch.long, device=self.device)
        mod = torch.tensor([{"none": 0, "linear": 1, "neg_linear": 2}[x] for x in s.u_modulation],
                           device=self.device)
        self.u_modulated = None
        if self.u_table is not None and bool((mod > 0).any()):
            self.u_modulated = (self.u_table.edge_params.clone(), mod == 1, mod == 2)
        self.mask_edges = [j for j, e in enumerate(s.u_specs) if e.gate == "threshold"]
        self.mask_count = torch.zeros(len(s.u_specs), dtype=torch.long, device=self.device)
        idx = {n: i for i, n in enumerate(self.names)}
        pairs = [(self.models[i], self.models[idx[n.ema_of]]) for i, n in enumerate(self.graph.nodes)
                 if n.ema_of is not None]
        self.ema = EmaUpdater(pairs, cfg.ema_decay)
        if not resume:  # (a resumed run has its EMA weights from the checkpoint)
            self.ema.reset()
        self.forward_nodes = [i for i in range(len(self.names))
                              if i in s.labeled_nodes or s.node_views[i]]

    # ------------------------------------------------------------------ setup
    @property
    def num_epochs(self) -> int:
        return -(-self.iterations // self.eval_every)

    def _make_slots(self) -> SSLSlots:
        return SSLSlots(self.graph)

    def _build_model(self, node):
        if node.ema_of is not None:  # the source's architecture and options
            node = dataclasses.replace(self.graph.node(node.ema_of), name=node.name)
        return super()._build_model(node)

    def _make_train_loader(self):
        """The labelled stream (returned) and the unlabelled one."""
        from ..data import Augment, RandAugment
        from ..data.semi import ViewStream

        cfg, d = self.config, self.data
        self.loader_name = "tensor"
        augment = self._augment(Augment)
        common = dict(augment=augment, mean=d.mean, std=d.std, device=self.device)
        self.labeled_stream = ViewStream(d.train, cfg.batch_size, views=("weak",), seed=2 * cfg.seed,
                                         **common)
        views = self.slots.views
        self.unlabeled_stream = None
        if views:
            if augment is None and {"weak", "weak2"} <= set(views):
                self._print("warning: augment is none, so the weak and weak2 views are the same images")
            strong = RandAugment(n=cfg.randaugment_n, m=cfg.randaugment_m,
                                 random_magnitude=cfg.randaugment_random_magnitude)
            self.unlabeled_stream = ViewStream(self.unlabeled, self.unlabeled_batch_size, views=views,
                                               strong=strong if "strong" in views else None,
                                               seed=2 * cfg.seed + 1, **common)
        return _PeriodLength(self.eval_every)

    def _scheduler(self, opt: torch.optim.Optimizer):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: self.lr_factor(k))

    def lr_factor(self, k: int) -> float:
        """The learning-rate multiplier at step ``k`` (of ``iterations``)."""
        c = self.config
        if c.schedule == "cosine":
            return math.cos(7 * math.pi * k / (16 * self.iterations))
        if c.schedule == "multistep":
            return c.gamma ** sum(k >= m for m in self.milestones)
        return 1.0

    # ------------------------------------------------------------------- step
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
        with self.autocast():
            zl, zu = self.forward_slots(xl, views)
        progress = self.step_t / self.progress_div
        some = zl if zl is not None else zu
        node_loss = torch.zeros(len(self.names), device=self.device,
                                dtype=torch.float64 if some.dtype == torch.float64 else torch.float32)
        if self.slots.edge_specs:
            out = gated_edge_loss(zl, yl, self.table, progress, self.graph.reduction)
            node_loss = node_loss.index_add(0, self.slot_owner, out.node_loss)
        if self.u_table is not None:
            if self.u_modulated is not None:
                self.u_table.edge_params = self._modulated_params(progress)
            out = gated_edge_loss(zu, yu, self.u_table, progress, self.graph.reduction)
            node_loss = node_loss.index_add(0, self.u_owner, out.node_loss)
            self.mask_count += out.count
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(node_loss.sum()).backward()
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        self.ema.update()
        for sch in self.schedulers:
            sch.step()
        self.step_t += 1
        return node_loss.detach()

    def _modulated_params(self, progress: torch.Tensor) -> torch.Tensor:
        """Edge parameters with the coefficients of tpl edges under Linear
        gates scaled by k/k_end or 1 − k/k_end (on the device)."""
        params, linear, neg = self.u_modulated
        one = torch.ones((), dtype=params.dtype, device=params.device)
        factor = torch.where(linear, progress, torch.where(neg, 1 - progress, one))
        out = params.clone()
        out[:, 1] *= factor
        return out

    # ---------------------------------------------------------------- periods
    def train_epoch(self) -> dict:
        """One evaluation period: ``eval_every`` steps, then evaluation, metrics
        and a checkpoint."""
        cfg = self.config
        period = self.epoch + 1
        k0, k1 = self.epoch * self.eval_every, min(period * self.eval_every, self.iterations)
        if k0 >= k1:
            raise RuntimeError(f"training is complete ({self.iterations} iterations)")
        for m, learns in zip(self.models, self.learning):
            m.train(learns)
        losses = EpochLosses(len(self.names), self.device)
        self.mask_count.zero_()
        bar = self._bar(period)
        t0 = time.perf_counter()
        for k in range(k0, k1):
            lab, yl, _ = self.labeled_stream.batch(k)
            views, yu = {}, None
            if self.unlabeled_stream is not None:
                views, yu, _ = self.unlabeled_stream.batch(k)
            self._after_step(self.train_step(lab["weak"], yl, views, yu), losses, k + 1 - k0,
                             k1 - k0, period, bar)
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        steps = k1 - k0
        self.epoch = period
        images = cfg.batch_size + (self.unlabeled_batch_size if self.unlabeled_stream else 0)
        row = {"epoch": period, "step": k1, "time_s": round(train_time, 3),
               "images_per_s": round(steps * images / train_time, 1),
               "lr": self.optimizers[0].param_groups[0]["lr"] if self.optimizers else 0.0}
        mask = {}
        if self.mask_edges:  # fraction of unlabelled samples past each threshold
            rate = (self.mask_count.double() / (steps * self.unlabeled_batch_size)).tolist()
            for j in self.mask_edges:
                e = self.slots.u_edges[j]
                mask[f"mask:{e.src}->{e.dst}"] = round(rate[j], 4)
        return self._finish_epoch(row, losses, steps, mask)


class _PeriodLength:
    """What ``Trainer.steps_per_epoch`` reads: the steps of one period."""

    def __init__(self, steps: int):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps


__all__ = ["SSLSlots", "SemiSupervisedTrainer", "wants_semi_supervised"]
