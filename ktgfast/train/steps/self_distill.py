"""Self-distillation with Born-Again generations (Takagi & Hattori 2019; docs/self_distillation.md),
and plain Born-Again Networks (BAN) to compare with.

One model (the graph's target node, e.g. ``--graph vanilla``) is trained in
generations.  Within a generation (Algorithm 1 of the paper):

* every training step stores the model's training-time probabilities of its
  batch in a device bank, ``tmp[idx] = softmax(f(x_DA, θ))`` (``idx``: the
  rows of the training split the loader yields);
* after the epoch, validation accuracy is measured; if it beats the
  generation's best (``PlateauRule``): ``θ_v ← θ`` (kept on the device) and
  ``y_v ← tmp``;
* the objective is eq. 1, ``CE(0.5·y + 0.5·y_v[idx], f(x_DA, θ))`` with a soft
  target.  ``y_v`` was stored under an earlier augmentation of the sample: the
  paper keeps that mismatch on purpose (noise on the teacher signal).

Generation k ≥ 2 is a fresh model (same architecture, new initialisation)
trained with eq. 2, eq. 1 plus ``CE(f(x_DA, θ_{k−1}), f(x_DA, θ_k))``, where
``θ_{k−1}`` are the previous generation's best-validation weights: frozen, in
eval mode, without gradient.  ``--method ban`` is the comparison: generation
1 is plain CE to the labels, generation k ≥ 2 adds the same teacher term; no
bank.  Its generation 1 is therefore vanilla training under the plateau rules.

Decisions where the papers say nothing or are ambiguous (also in
docs/self_distillation.md):

* the bank restarts from the one-hot labels in every generation: the paper
  trains generation k ≥ 2 with "Algorithm 1 using eq. 2 instead of eq. 1", and
  Algorithm 1 begins with ``y_v ← y`` (and ``acc_max ← 0``);
* ``tmp`` starts each epoch as a copy of ``y_v``, so the few samples that a
  ``drop_last`` loader skips in an epoch keep their previous target;
* on a plateau reset the optimizer's momentum buffers are cleared (the
  velocity of the abandoned trajectory does not carry over to the restored
  weights; the same as a fresh SGD at the decayed rate); the lr becomes
  ``max(lr·gamma, lr_floor)`` (``gamma`` 0.1 as the paper; the reset happens
  even when the lr already sits at the floor);
* a new generation starts at the recipe's lr with a fresh optimizer;
* the teacher term is a cross-entropy as in eq. 2 (temperature 1); it equals
  ``KL(p_teacher ‖ p_student)`` plus the teacher's entropy, so the gradient is
  the KL's; ``--config.schedule`` is ignored (the plateau rule sets the lr);
* ``epochs`` caps the whole run (all generations; the ``epoch`` column is
  global); ``max_epochs_per_generation`` caps one generation.  A generation cut
  by ``epochs`` is reported (``ended_by = total_cap``) but stays resumable: a
  resumed run with a larger ``epochs`` continues it.
* cumulative training time (the paper's x-axis) counts the training steps and
  the per-epoch validation (part of the method); the test evaluation of each
  generation's best weights is reporting and is not counted.

Outputs in the run folder besides the trainer's: ``metrics.csv`` gains the
columns ``generation``, ``gen_epoch``, ``best_val``, ``since_best``,
``cum_time_s`` and ``event``; ``generations.csv`` holds one row per
generation; ``generation<k>_best.pt`` its best-validation weights.
"""
from __future__ import annotations

import copy
import csv
import io
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from ...graph import Edge, Graph
from .. import checkpoint as ckpt
from ..build import build_node_model, make_train_loader, resolved_lr, sgd
from ..lowering import has_attention_branch
from ..plateau import PlateauRule
from ..update import update
from .base import Step
from .ktg import graph_of, load_data

MODES = ("self-distill", "ban")
BANK_WEIGHT = 0.5  # eq. 1: target = (1 − w)·y + w·y_v
SUMMARY_KEYS = ("generation", "epochs", "end_epoch", "best_epoch", "best_val_acc", "test_acc",
                "cum_time_s", "ended_by")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``−Σ_c target_c · log softmax(logits)_c``, mean over the batch."""
    return -(target * F.log_softmax(logits.float(), -1)).sum(-1).mean()


def bank_target(y: torch.Tensor, bank_rows: torch.Tensor) -> torch.Tensor:
    """Eq. 1's soft target ``0.5·onehot(y) + 0.5·y_v`` for a batch."""
    onehot = F.one_hot(y, bank_rows.shape[-1]).to(bank_rows.dtype)
    return (1 - BANK_WEIGHT) * onehot + BANK_WEIGHT * bank_rows


def generation_loss(logits: torch.Tensor, y: torch.Tensor, bank_rows: torch.Tensor | None = None,
                    teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 (``bank_rows`` given), eq. 2 (and ``teacher_logits``), BAN
    (``teacher_logits`` only) or plain CE (neither)."""
    if bank_rows is None:
        loss = F.cross_entropy(logits.float(), y)
    else:
        loss = soft_cross_entropy(logits, bank_target(y, bank_rows))
    if teacher_logits is not None:
        loss = loss + soft_cross_entropy(logits, teacher_logits.float().softmax(-1))
    return loss


def student_graph(graph: Graph, mode: str) -> tuple[Graph, list[str]]:
    """The one-node graph of ``graph``'s target node (label CE edge only), and
    the names of the nodes left out."""
    node = graph.node(graph.target_name)
    if node.is_ensemble or node.frozen or node.ema_of:
        raise ValueError(f"--method {mode} trains the graph's target node, but {node.name!r} is "
                         f"{'an ensemble' if node.is_ensemble else 'frozen' if node.frozen else 'an EMA'}"
                         " node; use a graph whose target is a learning model (e.g. --graph vanilla)")
    node = replace(node, frozen=False, weights=None, ema_of=None)
    left_out = [n for n in graph.node_names() if n != node.name]
    return Graph([node], [Edge("label", node.name, "ce")], node.name, name=mode), left_out


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class SelfDistillStep(Step):
    """Generations of one model; ``fit`` returns ``{"generations": [per-generation
    summary, ...], **last summary}``."""

    mode = "self-distill"

    @classmethod
    def prepare(cls, run, graph, data, graph_params, options):
        student, left_out = student_graph(graph_of(graph, graph_params), cls.mode)
        if left_out:
            run._print(f"--method {cls.mode} trains only node {student.target_name!r}; "
                       f"ignored: {', '.join(left_out)}")
        return graph_of(student, {}), load_data(run, data)

    def __init__(self, run):
        super().__init__(run)
        cfg, data = run.config, run.data
        if data.val is None or "val" not in cfg.eval_splits:
            raise ValueError(f"--method {self.mode} selects weights on validation accuracy: dataset "
                             f"{data.name!r} needs a val split (--val-size N) and eval_splits "
                             f"must contain 'val' (got {cfg.eval_splits})")
        self.lr = resolved_lr(cfg, data)
        if self.lr < cfg.lr_floor:
            raise ValueError(f"config.lr_floor = {cfg.lr_floor} is above the starting lr {self.lr}; "
                             "lower lr_floor or raise lr")
        self.node = run.graph.nodes[0]
        self.student_name = self.node.name
        self.names, self.learning = [self.student_name], [True]
        model = build_node_model(self.node, data, self.device, cfg.channels_last)
        if has_attention_branch(model):
            raise ValueError(f"--method {self.mode}: attention-branch models are not supported "
                             f"(node {self.student_name!r})")
        self.check_sync_bn()
        self.models = torch.nn.ModuleList([model])
        self.forwards = [self._forward_fn(model)]
        self.optimizers = [sgd(model, self.lr, cfg)]
        self.schedulers = []  # the plateau rule owns the lr
        if cfg.schedule != "constant":
            run._print(f"--method {self.mode}: config.schedule={cfg.schedule!r} is ignored; the "
                       "plateau rule sets the lr")
        shortest = cfg.generation_patience + 1  # a generation that gains only in epoch 1
        if cfg.max_epochs_per_generation is not None:
            shortest = min(shortest, cfg.max_epochs_per_generation)
        if cfg.epochs < cfg.generations * shortest:
            run._print(f"note: --epochs {cfg.epochs} caps the whole run, but {cfg.generations} "
                       f"generations take at least {cfg.generations * shortest} epochs; the last "
                       "generations will be cut (raise --epochs)")
        self.loader_name, self.train_loader = make_train_loader(run)
        self.steps_per_epoch = len(self.train_loader)
        self.num_periods = cfg.epochs
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.images_per_step = cfg.batch_size * run.dist.world_size
        n, c = len(data.train.labels), data.num_classes
        self.train_labels = data.train.labels.to(self.device)
        self.uses_bank = self.mode == "self-distill"
        self.y_v = self.tmp = None
        if self.uses_bank:
            self.y_v = torch.empty(n, c, dtype=torch.float32, device=self.device)
            self.tmp = torch.empty_like(self.y_v)
        self.written: list[torch.Tensor] = []  # the bank rows this rank wrote this epoch
        self.teacher: torch.nn.Module | None = None
        self.summaries: list[dict] = []    # completed generations
        self.cum_time = 0.0
        self.done = False
        self.partial: dict | None = None  # the generation cut by ``epochs`` (not checkpointed)
        self._messages: list[str] = []
        self._begin_generation(1)

    def _forward_fn(self, model):
        return self.node_forward(model, learns=True)  # DDP under torchrun (a collective)

    # ------------------------------------------------------------ generations
    def _new_rule(self) -> PlateauRule:
        c = self.config
        return PlateauRule(c.plateau_patience, c.generation_patience, c.max_epochs_per_generation)

    def _begin_generation(self, k: int) -> None:
        """Bank at one-hot, ``θ_v`` = the initial weights (Algorithm 1, line 1)."""
        self.generation = k
        self.rule = self._new_rule()
        self.best_state = _clone_state(self.models[0])
        if self.uses_bank:
            self.y_v.copy_(F.one_hot(self.train_labels, self.y_v.shape[1]))

    def _next_generation(self) -> None:
        """The finished generation's model, loaded with its best weights,
        becomes the frozen teacher; a freshly initialised model is the student."""
        teacher = self.models[0]
        teacher.load_state_dict(self.best_state)
        teacher.zero_grad(set_to_none=True)  # the last step's gradients are no teacher's business
        self.teacher = teacher.eval().requires_grad_(False)
        model = build_node_model(self.node, self.run.data, self.device, self.config.channels_last)
        self.models[0] = model
        self.forwards = [self._forward_fn(model)]
        self.optimizers = [sgd(model, self.lr, self.config)]
        self._begin_generation(self.generation + 1)

    def _reset_to_best(self) -> float:
        self.models[0].load_state_dict(self.best_state)
        opt = self.optimizers[0]
        opt.state.clear()  # see the module docstring: momentum restarts at the best weights
        for group in opt.param_groups:
            group["lr"] = max(group["lr"] * self.config.gamma, self.config.lr_floor)
        return opt.param_groups[0]["lr"]

    def _test_best(self, keep: bool) -> float | None:
        """Test accuracy of the generation's best-validation weights; the model
        keeps them when ``keep``, else gets its current weights back."""
        if self.run.data.test is None:
            return None
        model = self.models[0]
        current = None if keep else _clone_state(model)
        model.load_state_dict(self.best_state)
        acc = self.run.evaluate("test")[self.student_name]
        if current is not None:
            model.load_state_dict(current)
        return round(acc, 4)

    def _summary(self, reason: str, keep: bool) -> dict:
        r = self.rule
        return {"generation": self.generation, "epochs": r.epochs, "end_epoch": self.run.epoch,
                "best_epoch": r.best_epoch, "best_val_acc": r.best,
                "test_acc": self._test_best(keep), "cum_time_s": round(self.cum_time, 3),
                "ended_by": reason}

    # ------------------------------------------------------------------ steps
    def steps_in_period(self, period: int) -> int:
        return self.steps_per_epoch

    def begin_period(self, period: int) -> None:
        self.train_loader.set_epoch(period)
        if self.uses_bank:
            self.tmp.copy_(self.y_v)
        self.written = []
        self._messages = []

    def batches(self, period: int):
        for x, y, idx in self.train_loader:
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y, idx

    def train_step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(self.device)
        with self.run.autocast():
            z = self.forwards[0](x)
            t = None
            if self.teacher is not None:
                with torch.no_grad():
                    t = self.teacher(x)
        bank_rows = None
        if self.uses_bank:
            self.tmp[idx] = z.detach().float().softmax(-1)
            bank_rows = self.y_v[idx]
            if self.run.dist.enabled:
                self.written.append(idx)
        loss = generation_loss(z, y, bank_rows, t)
        update(self.optimizers, self.run.scaler, loss)
        return loss.detach().reshape(1)

    def end_training_period(self) -> None:
        """Under torchrun: every rank's bank gets the rows all ranks wrote
        this epoch (docs/distributed.md).  A sample's next-epoch rank is
        another, so each rank needs the whole bank; the shards are disjoint,
        so the gathered rows are exactly one process's ``tmp``."""
        super().end_training_period()
        if self.uses_bank and self.run.dist.enabled:
            from ...parallel.ddp import all_gather_rows

            ids = torch.cat(self.written) if self.written else torch.empty(0, dtype=torch.long,
                                                                           device=self.device)
            ids, rows = all_gather_rows(ids, self.tmp[ids], self.run.dist.world_size)
            self.tmp[ids] = rows
            self.written = []

    def end_period(self, row: dict) -> None:
        t0 = time.perf_counter()
        decision = self.rule.step(row[f"val_acc:{self.student_name}"])
        events = []
        if decision.improved:
            self.best_state = _clone_state(self.models[0])
            if self.uses_bank:
                self.y_v.copy_(self.tmp)
            events.append("improved")
        val_s = self.run.last_eval_s.get("val", 0.0)
        self.cum_time += row["time_s"] + val_s + (time.perf_counter() - t0)
        row.update(generation=self.generation, gen_epoch=self.rule.epochs, best_val=self.rule.best,
                   since_best=self.rule.since, cum_time_s=round(self.cum_time, 3))
        if decision.action == "end":
            last = self.generation >= self.config.generations
            self.summaries.append(self._summary(decision.reason, keep=last))
            self._save_generation()
            events.append("end")
            self._messages.append(_summary_line(self.summaries[-1]))
            if last:
                self.done = True
            else:
                self._next_generation()
        elif decision.action == "reset":
            lr = self._reset_to_best()
            events.append(f"reset(lr={lr:g})")
            self._messages.append(f"generation {self.generation}: no val gain for {self.rule.since} "
                                  f"epochs; back to the best weights (epoch {self.rule.best_epoch} "
                                  f"of this generation), lr {lr:g}")
        if not self.done and self.run.epoch >= self.config.epochs and self.rule.epochs > 0:
            self.partial = self._summary("total_cap", keep=False)
            self._messages.append(_summary_line(self.partial))
        row["event"] = "+".join(events)
        self._write_summaries()

    def messages(self) -> list[str]:
        return self._messages

    def finished(self) -> bool:
        return self.done

    def result(self, last_row: dict) -> dict:
        rows = self.generation_rows()
        return {"generations": rows, **(rows[-1] if rows else {})}

    def generation_rows(self) -> list[dict]:
        """Completed generations, plus the one this process cut at ``epochs``."""
        return self.summaries + ([self.partial] if self.partial else [])

    # ----------------------------------------------------------------- output
    def _save_generation(self) -> None:
        if self.run.is_main and self.config.checkpoint:
            ckpt.atomic_save(self.best_state, self.run.run_dir / f"generation{self.generation}_best.pt")

    def _write_summaries(self) -> None:
        if not self.run.is_main:
            return
        rows = self.generation_rows()
        if rows:
            self.run.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(summaries_csv(rows), self.run.run_dir / "generations.csv")

    # ------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict:
        return {"generations": {
            "mode": self.mode, "generation": self.generation, "done": self.done,
            "rule": self.rule.state_dict(), "cum_time": self.cum_time,
            "summaries": list(self.summaries),
            "best_state": {k: v.cpu() for k, v in self.best_state.items()},
            "y_v": self.y_v.cpu() if self.uses_bank else None,
            "teacher": self.teacher.state_dict() if self.teacher is not None else None}}

    def load_extra_state(self, state: dict) -> None:
        g = state.get("generations")
        if g is None or g["mode"] != self.mode:
            raise ValueError(f"checkpoint in {str(self.run.run_dir)!r} was not written by --method "
                             f"{self.mode} (found {g['mode'] if g else 'another method'}); resume "
                             "with the same method or choose another --out")
        self.generation, self.done, self.cum_time = g["generation"], g["done"], g["cum_time"]
        self.rule = PlateauRule.from_state(g["rule"])
        self.summaries = list(g["summaries"])
        self.best_state = {k: v.to(self.device) for k, v in g["best_state"].items()}
        if self.uses_bank:
            self.y_v.copy_(g["y_v"])
        if g["teacher"] is not None:  # a copy, not a new build: building would draw from the RNG
            self.teacher = copy.deepcopy(self.models[0])
            self.teacher.load_state_dict(g["teacher"])
            self.teacher.eval().requires_grad_(False)


class BornAgainStep(SelfDistillStep):
    """Plain BAN (Furlanello et al. 2018): CE to the labels, plus CE to the
    frozen previous generation from generation 2 on; same plateau rules and
    bookkeeping, no bank."""

    mode = "ban"


def summaries_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SUMMARY_KEYS))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _summary_line(s: dict) -> str:
    test = "n/a" if s["test_acc"] is None else f"{s['test_acc']:.2f}%"
    return (f"generation {s['generation']} ended ({s['ended_by']}) after {s['epochs']} epochs: "
            f"best val {s['best_val_acc']:.2f}% (epoch {s['best_epoch']}), test of best {test}, "
            f"cumulative time {s['cum_time_s']:.1f}s")


__all__ = ["BANK_WEIGHT", "BornAgainStep", "MODES", "SelfDistillStep", "bank_target",
           "generation_loss", "soft_cross_entropy", "student_graph", "summaries_csv"]
