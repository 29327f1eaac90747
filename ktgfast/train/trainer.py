"""The KTG trainer: every node forwards the same batch once, one fused call
computes all edges, one backward of Σ_t L_t, every optimizer steps.

Because every edge's source is detached, node t's parameters receive gradient
only from its own loss L_t, so one backward of the sum is Algorithm 1 of the
thesis.  The step reads nothing back from the device: the loss check and the
progress bar read device tensors every ``log_every`` steps.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from ..edges import AttentionEdgeTable, EdgeTable
from ..graph import AUTO_MODEL, Graph, render, resolve_graph, save_graph, summary, validate
from .. import ops
from ..ops import gated_edge_loss
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistEnv
from .metrics import MetricsLog
from .mixup_loss import MixedTargetEdges
from .slots import EnsembleNode, Slots

# The model a node with model "auto" gets, by dataset (else by image size).
DEFAULT_MODELS = {"mnist5k": "cnn_small", "synthetic": "cnn_small", "cifar10": "resnet32",
                  "cifar100": "resnet32"}
FLIP_FREE = {"mnist5k"}  # digits are not mirror-symmetric: crop only
# Learning rate when config.lr is None.  SPEC §1 says 0.1 (CIFAR); the tiny
# MNIST CNN spikes in its first steps even at 0.05 and, once peers pull each
# other through KL, can collapse to the uniform output, so digits get 0.02.
DEFAULT_LR = {"mnist5k": 0.02, "synthetic": 0.02}


class EpochLosses:
    """Per-node loss sums of an epoch, which nodes stayed finite and the first
    bad step, all on the device: booking a step never syncs with the host."""

    def __init__(self, nodes: int, device: torch.device):
        self.sum = torch.zeros(nodes, dtype=torch.float64, device=device)
        self.finite = torch.ones(nodes, dtype=torch.bool, device=device)
        self.first_bad = torch.full((), -1.0, dtype=torch.float64, device=device)

    def add(self, node_loss: torch.Tensor, step: torch.Tensor) -> None:
        ok = torch.isfinite(node_loss)
        self.first_bad = torch.where((self.first_bad < 0) & ~ok.all(), step, self.first_bad)
        self.finite &= ok
        self.sum += torch.where(ok, node_loss, 0).double()


class NonFiniteLossError(RuntimeError):
    """A node's loss became NaN or Inf; the last good checkpoint is kept."""


def default_model(dataset) -> str:
    if dataset.name in DEFAULT_MODELS:
        return DEFAULT_MODELS[dataset.name]
    return "resnet32" if dataset.image_size <= 32 else "resnet18"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device = {name!r} but no CUDA device is available; use cpu or auto")
    return dev


class Trainer:
    """Train a graph on a dataset.

    >>> Trainer("dml", "mnist5k", TrainConfig(epochs=3)).fit()   # doctest: +SKIP

    A semi-supervised graph (or ``config.labels_per_class``) makes ``Trainer(...)``
    a :class:`~ktgfast.train.ssl.SemiSupervisedTrainer`.
    """

    def __new__(cls, graph=None, data=None, config=None, **kwargs):
        if cls is Trainer:
            from .ssl import SemiSupervisedTrainer, wants_semi_supervised

            if wants_semi_supervised(graph, config, kwargs.get("graph_params")):
                cls = SemiSupervisedTrainer
        return super().__new__(cls)

    def __init__(self, graph: Graph | str, data, config: TrainConfig | None = None, *,
                 resume: bool = False, graph_params: dict | None = None):
        from ..data import get_dataset
        from ..models import model_options

        self.config = (config or TrainConfig()).validate()
        self.graph = resolve_graph(graph, **(graph_params or {})) if isinstance(graph, str) else graph
        validate(self.graph, known_models=model_options)
        cfg = self.config
        self.dist = DistEnv.from_env()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.data = data if not isinstance(data, str) else get_dataset(
            data, root=cfg.data_root, download=cfg.download, val_size=cfg.val_size, seed=0)
        for split in cfg.eval_splits:
            if getattr(self.data, split, None) is None:
                raise ValueError(f"config.eval_splits asks for {split!r} but dataset "
                                 f"{self.data.name!r} has no {split} split")
        self.mixup = self._mixup()
        self.run_dir = Path(cfg.out or f"runs/{self.graph.name or 'graph'}-{self.data.name}-"
                                        f"{time.strftime('%Y%m%d-%H%M%S')}")
        self.is_main = self.dist.rank == 0
        self._seed(cfg.seed + self.dist.rank)

        self.names = self.graph.node_names()
        self.learning = [self.graph.learns(n) and not n_.is_ensemble and n_.ema_of is None
                         for n, n_ in zip(self.names, self.graph.nodes)]
        self.models = nn.ModuleList(self._build_model(n) for n in self.graph.nodes)
        self._load_frozen_weights()
        self.slots = self._make_slots()
        self.forwards = [self._forward_fn(m, i) for i, m in enumerate(self.models)]
        self.optimizers = [self._optimizer(m) for m, learns in zip(self.models, self.learning) if learns]
        self.schedulers = [self._scheduler(o) for o in self.optimizers]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.table = EdgeTable(self.slots.edge_specs, self.slots.count, self.device)
        self.att_table = (AttentionEdgeTable(self.graph.attention_specs(), len(self.names), self.device)
                          if self.slots.maps else None)
        self.slot_owner = torch.tensor(self.slots.owner, dtype=torch.long, device=self.device)
        self.mixed_edges = (MixedTargetEdges(self.slots.edge_specs, self.slots.count, self.device)
                            if self.mixup is not None else None)

        self.train_loader = self._make_train_loader()
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the training split "
                             f"({len(self.data.train.labels)} samples); no step would run")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        # Device-side step counter: progress k / (k_end - 1) reaches 1 at the last step.
        self.step_t = torch.zeros((), dtype=torch.float64, device=self.device)
        self.progress_div = float(max(self.total_steps - 1, 1))
        self.epoch = 0
        self.log = MetricsLog(self.run_dir, cfg.tensorboard, enabled=self.is_main)
        if resume:
            self._resume()

    # ------------------------------------------------------------------ setup
    def _make_slots(self) -> Slots:
        return Slots(self.graph, self.models, self.learning)

    def _make_train_loader(self):
        from ..data import Augment
        from ..data.loaders import make_loader, resolve_loader

        cfg = self.config
        self.loader_name, reason = resolve_loader(cfg.loader, self.data, self.device)
        self._print(reason)
        return make_loader(
            self.loader_name, self.data.train, cfg.batch_size, device=self.device, dataset=self.data,
            shuffle=True, drop_last=True, augment=self._augment(Augment), mean=self.data.mean,
            std=self.data.std, seed=cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size)

    def _seed(self, seed: int) -> None:
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _mixup(self):
        """The batch mixer of ``config.mixup`` (SPEC §5), checked before training."""
        from ..data.mixup import POLICIES, Mixup, resolve_superclass_map

        cfg = self.config
        if cfg.mixup == "none":
            return None
        if type(self).train_step is not Trainer.train_step or type(self).train_batch is not Trainer.train_batch:
            raise ValueError(f"config.mixup = {cfg.mixup!r}, but {type(self).__name__} has its own "
                             "training step, which does not mix batches; use mixup none")
        smap = (resolve_superclass_map(self.data, cfg.superclass_map, cfg.mixup)
                if POLICIES[cfg.mixup].uses_superclasses else None)
        return Mixup(cfg.mixup, alpha=cfg.mixup_alpha, superclass_map=smap, seed=cfg.seed,
                     rank=self.dist.rank, device=self.device)

    def _build_model(self, node) -> nn.Module:
        from ..models import build_model

        if node.is_ensemble:
            return EnsembleNode()
        name = default_model(self.data) if node.model == AUTO_MODEL else node.model
        model = build_model(name, self.data.num_classes, in_channels=self.data.channels, **node.options)
        model = model.to(self.device)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _load_frozen_weights(self) -> None:
        from .pretrain import ensure_pretrained

        for i, node in enumerate(self.graph.nodes):
            if self.learning[i] or node.is_ensemble or node.ema_of is not None:
                continue
            if node.weights:
                path = node.weights
            else:  # pretraining runs its own seeded trainer: keep our RNG streams
                rng = ckpt.rng_state()
                path = ensure_pretrained(self, node)
                ckpt.set_rng_state(rng)
            state = torch.load(path, map_location=self.device, weights_only=True)
            try:
                self.models[i].load_state_dict(state)
            except RuntimeError as exc:
                raise ValueError(f"weights {path!r} do not fit node {node.name!r} "
                                 f"({node.model}): {exc}") from None
            self.models[i].eval().requires_grad_(False)

    @property
    def lr(self) -> float:
        return self.config.lr if self.config.lr is not None else DEFAULT_LR.get(self.data.name, 0.1)

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=c.momentum,
                               nesterov=c.nesterov and c.momentum > 0, weight_decay=c.weight_decay)

    def _scheduler(self, opt: torch.optim.Optimizer):
        c = self.config
        if c.schedule == "multistep":
            return torch.optim.lr_scheduler.MultiStepLR(opt, c.resolved_milestones(), c.gamma)
        if c.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

    def _augment(self, Augment):
        mode = self.config.augment
        if mode == "auto":
            mode = "crop" if self.data.name in FLIP_FREE else "crop_flip"
        if mode == "none":
            return None
        return Augment(pad=self.config.pad, pad_mode=self.config.pad_mode, crop=True,
                       flip=mode == "crop_flip")

    # ------------------------------------------------------------------- step
    def autocast(self):
        amp = self.config.amp
        if amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward_fn(self, model: nn.Module, i: int):
        """What the step calls for node ``i``: ``forward_outputs`` (logits,
        attention map, attention-branch logits) where maps or an attention
        branch are needed, else the plain forward; compiled on request."""
        if isinstance(model, EnsembleNode):
            return None
        fn = model.forward_outputs if self.slots.wants_outputs[i] else model
        return torch.compile(fn) if self.config.compile else fn

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
        for i, members in self.slots.ensembles.items():
            logits[i] = torch.stack([logits[j] for j in members]).mean(0)
        z = torch.stack(logits + aux)
        if not self.slots.maps:
            return z, None
        ref = next(m for m in maps if m is not None)
        return z, torch.stack([m if m is not None else torch.zeros_like(ref) for m in maps])

    def train_step(self, x: torch.Tensor, y) -> torch.Tensor:
        """One step on images ``x`` with labels ``y``: ``(B,)`` int64, or the
        ``MixedTargets`` of a mixup batch."""
        with self.autocast():
            logits, maps = self.forward_all(x)
        progress = self.step_t / self.progress_div
        if not isinstance(y, torch.Tensor):  # MixedTargets: soft-target label edges (mixup_loss.py)
            slot_loss = self.mixed_edges(logits, y, progress, self.graph.reduction)
            y = y.dominant
        else:
            slot_loss = gated_edge_loss(logits, y, self.table, progress, self.graph.reduction).node_loss
        # Per node: its slots' losses (attention-branch CE included) + attention edges.
        node_loss = torch.zeros(len(self.names), dtype=slot_loss.dtype, device=self.device)
        node_loss = node_loss.index_add(0, self.slot_owner, slot_loss)
        if maps is not None:
            att = ops.attention_crop_loss(maps, logits[:len(self.names)], y, self.att_table, progress,
                                      self.slots.crop_sizes, self.graph.reduction,
                                      self.graph.attention_pull)
            node_loss = node_loss + att.node_loss.to(node_loss.dtype)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(node_loss.sum()).backward()
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        self.step_t += 1
        return node_loss.detach()

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One step on a batch whose rows are ``idx`` of the training split;
        subclasses that keep per-sample state (self_distill.py) override it."""
        return self.train_step(x, y)

    # ------------------------------------------------------------------ epochs
    def fit(self) -> dict:
        cfg = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(_yaml({"config": cfg.to_dict(),
                                                             "data": self.data.name}))
            save_graph(self.graph, self.run_dir / "graph.yaml")
            self._print(summary(self.graph))
        result = self.history[-1] if self.history else {}
        while not self._finished():
            result = self.train_epoch()
        self.log.close()
        return result

    def _finished(self) -> bool:
        """Whether ``fit`` stops (subclasses with their own end rule override it)."""
        return self.epoch >= self.num_epochs

    @property
    def num_epochs(self) -> int:
        """Epochs ``fit`` runs (a subclass may count other periods)."""
        return self.config.epochs

    @property
    def history(self) -> list[dict]:
        return self.log.history

    def train_epoch(self) -> dict:
        cfg = self.config
        epoch = self.epoch + 1
        self.train_loader.set_epoch(epoch)
        if self.mixup is not None:
            self.mixup.set_epoch(epoch)
        for m, learns in zip(self.models, self.learning):
            m.train(learns)
        losses = EpochLosses(len(self.names), self.device)
        bar = self._bar(epoch)
        t0 = time.perf_counter()
        for i, (x, y, idx) in enumerate(self.train_loader):
            if self.mixup is not None:  # every node sees the same mixed batch
                x, y = self.mixup(x, y)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            self._after_step(self.train_batch(x, y, idx), losses, i + 1, self.steps_per_epoch,
                             epoch, bar)
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        for s in self.schedulers:
            s.step()
        self.epoch = epoch
        row = {"epoch": epoch, "step": int(self.step_t.item()), "time_s": round(train_time, 3),
               "images_per_s": round(self.steps_per_epoch * cfg.batch_size / train_time, 1),
               "lr": self.optimizers[0].param_groups[0]["lr"] if self.optimizers else 0.0}
        return self._finish_epoch(row, losses, self.steps_per_epoch)

    def _after_step(self, node_loss: torch.Tensor, losses: "EpochLosses", done: int, total: int,
                    epoch: int, bar) -> None:
        """Book one step's losses; every ``log_every`` steps (and at the end)
        read them on the host: the NaN/Inf check and the progress bar."""
        losses.add(node_loss, self.step_t - 1)
        if done % self.config.log_every == 0 or done == total:
            self._check_finite(losses, epoch)
            if bar is not None:
                bar.set_postfix(loss=f"{(losses.sum.sum() / done).item():.3f}")
        if bar is not None:
            bar.update(1)

    def _finish_epoch(self, row: dict, losses: "EpochLosses", steps: int, extra: dict = None) -> dict:
        """Mean training losses (then the ``extra`` columns), evaluation,
        subclass bookkeeping, metrics and the checkpoint of an epoch whose
        timing columns are in ``row``."""
        for n, l, learns in zip(self.names, (losses.sum / steps).tolist(), self.learning):
            if learns:
                row[f"train_loss:{n}"] = round(l, 6)
        row.update(extra or {})
        for split in self.config.eval_splits:
            for k, v in self.evaluate(split).items():
                row[f"{split}_acc:{k}"] = round(v, 4)
        self._epoch_end(row)
        self.log.add(row)          # in the history before the checkpoint saves it
        self._save_checkpoint()
        self.log.write(row)
        self._print(_console(row))
        return row

    def _epoch_end(self, row: dict) -> None:
        """Subclasses' end-of-epoch bookkeeping (it may add columns to ``row``),
        after evaluation and before the checkpoint (see self_distill.py)."""

    def _check_finite(self, losses: "EpochLosses", epoch: int) -> None:
        if bool(losses.finite.all()):
            return
        bad = [n for n, ok in zip(self.names, losses.finite.tolist()) if not ok]
        last = self.run_dir / "checkpoint.pt"
        kept = f"the last good checkpoint {str(last)!r} (epoch {self.epoch}) is kept" if last.exists() \
            else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"loss of node {', '.join(map(repr, bad))} became NaN/Inf at step {int(losses.first_bad.item())} "
            f"(epoch {epoch}); {kept}. Lower the learning rate, check the data, or use amp=none.")

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Top-1 accuracy (%) of every node and of the ensemble (mean logits)."""
        from ..data import TensorLoader

        data = getattr(self.data, split)
        # Built once per split: on a GPU each build would copy the split to the device.
        loaders = self.__dict__.setdefault("_eval_loaders", {})
        if split not in loaders:
            loaders[split] = TensorLoader(data, self.config.eval_batch_size, shuffle=False,
                                          drop_last=False, augment=None, mean=self.data.mean,
                                          std=self.data.std, device=self.device)
        loader = loaders[split]
        for m in self.models:
            m.eval()
        models = [i for i, m in enumerate(self.models) if not isinstance(m, EnsembleNode)]
        hits = torch.zeros(len(self.names) + 1, dtype=torch.long, device=self.device)
        for x, y, _ in loader:
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                z: list = [None] * len(self.names)
                for i in models:
                    z[i] = self.models[i](x).float()
            for i, members in self.slots.ensembles.items():
                z[i] = torch.stack([z[j] for j in members]).mean(0)
            zs = torch.stack(z)
            hits[:-1] += (zs.argmax(-1) == y).sum(-1)
            hits[-1] += (zs[models].mean(0).argmax(-1) == y).sum()
        acc = (100.0 * hits.double() / len(data.labels)).tolist()
        # "ensemble": the mean over every model node, unless a node has that name.
        out = dict(zip(self.names, acc[:-1]))
        out.setdefault("ensemble", acc[-1])
        return out

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step_t.item(),
            "models": [m.state_dict() for m in self.models],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "graph_key": self.graph.key(),
            "config": self.config.to_dict(),
            "history": self.history,
            **self._extra_state(),
        }

    def _extra_state(self) -> dict:
        """Subclasses' additional checkpoint entries (see distill.py)."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def _save_checkpoint(self) -> None:
        if self.is_main and self.config.checkpoint:
            ckpt.atomic_save(self.state_dict(), self.run_dir / "checkpoint.pt")

    def _resume(self) -> None:
        path = self.run_dir / "checkpoint.pt"
        state = ckpt.load(path)
        if state["graph_key"] != self.graph.key():
            raise ValueError(f"checkpoint {str(path)!r} belongs to a different graph; "
                             "resume with the same graph or choose another --out")
        for m, s in zip(self.models, state["models"]):
            m.load_state_dict(s)
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"]):
            sch.load_state_dict(s)
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.step_t.fill_(state["step"])
        self.log.history = list(state["history"])
        self._load_extra_state(state)
        self._print(f"resumed {str(path)!r} at epoch {self.epoch} (step {int(state['step'])})")

    # ----------------------------------------------------------------- output
    def _bar(self, epoch: int):
        show = self.config.progress_bar
        if show is None:
            show = sys.stderr.isatty()
        if not (show and self.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.num_epochs}",
                    leave=False, dynamic_ncols=True)

    def _print(self, text: str) -> None:
        if self.is_main and self.config.verbose:
            print(text, flush=True)

    def render_graph(self, path: str | os.PathLike) -> Path:
        return render(self.graph, path)


def _console(row: dict) -> str:
    accs = "  ".join(f"{k.split('_acc:')[0]}:{k.split(':')[1]} {v:.2f}%" for k, v in row.items()
                     if "_acc:" in k)
    return f"epoch {row['epoch']:>3}  {row['time_s']:6.1f}s  {row['images_per_s']:8.1f} img/s  {accs}"


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False)


__all__ = ["Trainer", "NonFiniteLossError", "default_model"]
