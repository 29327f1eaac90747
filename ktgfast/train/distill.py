"""Ensemble → one student (thesis §4.3.3): distil the model nodes of a trained
ensemble graph into a single model, one loss per teacher, gradients optionally
aggregated with PCGrad.

Tasks (one loss each, in this order):

* ``label``       CE of the student to the labels (plus the attention
                  branch's CE for an ABN student, as ABN trains it);
* ``prob:<t>``    ``T²·KL(p_t^T ‖ p_student^T)`` per teacher ``t`` (the CE with
                  temperature of the thesis, minus the teacher's entropy, which
                  has no gradient);
* ``att:<t>``     the attention-map loss per teacher: the squared L2 distance
                  of the L2-normalised maps (flattened), averaged over the
                  batch, times ``att_weight`` (the teacher map is resized to
                  the student's when their sizes differ).

``target="ensemble"`` replaces the per-teacher terms by one term on the
averaged ensemble (mean logits; mean map) — the baseline of table 4.9.
``aggregate="sum"`` back-propagates the sum of the task losses;
``aggregate="pcgrad"`` gets the task gradients with one batched backward,
projects them (``ktgfast.ops.pcgrad``) and counts conflicts per task pair
(``conflicts.csv``; tables 4.10-4.11 are its teacher blocks).

The student trainer is a :class:`~ktgfast.train.Trainer` of a one-node graph,
so loaders, schedules, evaluation, metrics, checkpoints and ``--resume`` are
the trainer's; only the step differs.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..graph import AUTO_MODEL, Edge, Graph, Node
from ..models import ModelOutputs
from . import checkpoint as ckpt
from .config import TrainConfig
from .run_dir import load_run
from .trainer import Trainer, default_model

TARGETS = ("per-teacher", "ensemble")
KNOWLEDGE = ("prob", "att")
AGGREGATIONS = ("sum", "pcgrad")
ORDERS = ("random", "fixed")


@dataclass
class DistillSettings:
    teachers: str                          # run folder of a trained (ensemble) graph
    teacher_nodes: list[str] | None = None  # default: every model node of that graph
    student: str = AUTO_MODEL              # default: the first teacher's architecture
    target: str = "per-teacher"
    knowledge: list[str] = field(default_factory=lambda: ["prob"])
    T: float = 2.0
    att_weight: float = 1.0
    aggregate: str = "sum"
    order: str = "random"                  # PCGrad's visiting order
    pcgrad_reduction: str = "sum"
    batched_grads: bool = True             # one batched backward for the task gradients

    def validate(self) -> "DistillSettings":
        def bad(name, value, allowed):
            raise ValueError(f"distill.{name} = {value!r}; allowed: {', '.join(map(str, allowed))}")

        if self.target not in TARGETS:
            bad("target", self.target, TARGETS)
        if not self.knowledge or any(k not in KNOWLEDGE for k in self.knowledge):
            bad("knowledge", self.knowledge, KNOWLEDGE)
        if self.aggregate not in AGGREGATIONS:
            bad("aggregate", self.aggregate, AGGREGATIONS)
        if self.order not in ORDERS:
            bad("order", self.order, ORDERS)
        if self.pcgrad_reduction not in ("sum", "mean"):
            bad("pcgrad_reduction", self.pcgrad_reduction, ("sum", "mean"))
        if not (isinstance(self.T, (int, float)) and self.T > 0):
            raise ValueError(f"distill.T = {self.T!r}; the temperature must be > 0 (thesis: 1, 2, 5, 10)")
        return self


def attention_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``‖q_s/‖q_s‖ − q_t/‖q_t‖‖²`` over flattened maps (N, H, W)."""
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher[:, None], size=student.shape[-2:], mode="bilinear",
                                align_corners=False)[:, 0]
    u = F.normalize(student.flatten(1).float(), dim=1)
    v = F.normalize(teacher.flatten(1).float(), dim=1)
    return (u - v).pow(2).sum(1).mean()


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """``T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``, batchmean (DESIGN pitfalls 1-3)."""
    return T * T * F.kl_div(F.log_softmax(student_logits.float() / T, -1),
                            F.softmax(teacher_logits.float() / T, -1), reduction="batchmean")


class Distiller(Trainer):
    """``Distiller(settings, data, config).fit()`` trains the student."""

    def __init__(self, settings: DistillSettings, data=None, config: TrainConfig | None = None, *,
                 resume: bool = False):
        self.settings = settings.validate()
        teachers = load_run(settings.teachers, "cpu", data if not isinstance(data, str) else None,
                            settings.teacher_nodes)
        data = teachers.data if data is None else data
        student = settings.student
        if student == AUTO_MODEL:
            first = teachers.graph.node(next(iter(teachers.models)))
            student = default_model(teachers.data) if first.model == AUTO_MODEL else first.model
        graph = Graph([Node("student", student)], [Edge("label", "student", "ce")], "student",
                      name="distill")
        self.teacher_names = list(teachers.models)
        self.teachers = list(teachers.models.values())
        self.task_names = self._task_names()
        self.conflicts = torch.zeros(len(self.task_names), len(self.task_names), dtype=torch.long)
        self.order_rng = torch.Generator().manual_seed((config or TrainConfig()).seed)
        super().__init__(graph, data, config, resume=resume)
        if self.data.num_classes != teachers.data.num_classes:
            raise ValueError(f"the teachers in {settings.teachers!r} predict {teachers.data.num_classes} "
                             f"classes but dataset {self.data.name!r} has {self.data.num_classes}")
        if self.settings.aggregate == "pcgrad" and self.config.amp == "fp16":
            raise ValueError("aggregate='pcgrad' needs unscaled gradients: use amp bf16 or none, not fp16")
        self.teachers = [t.to(self.device) for t in self.teachers]
        self.conflicts = self.conflicts.to(self.device)
        self.student = self.models[0]
        self.params = [p for p in self.student.parameters() if p.requires_grad]
        self.need_maps = "att" in self.settings.knowledge

    def _task_names(self) -> list[str]:
        s = self.settings
        sources = ["ensemble"] if s.target == "ensemble" else self.teacher_names
        return ["label"] + [f"{k}:{t}" for k in s.knowledge for t in sources]

    # ------------------------------------------------------------------- step
    def _outputs(self, model, x):
        if self.need_maps or getattr(model, "has_aux_logits", False):
            return model.forward_outputs(x)
        return ModelOutputs(model(x), None, None)

    def task_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(K,)`` task losses in the order of ``task_names``."""
        s = self.settings
        with torch.no_grad():
            teach = [self._outputs(t, x) for t in self.teachers]
        out = self._outputs(self.student, x)
        label = F.cross_entropy(out.logits.float(), y)
        if out.aux_logits is not None:
            label = label + F.cross_entropy(out.aux_logits.float(), y)
        if s.target == "ensemble":
            logits = [torch.stack([t.logits for t in teach]).float().mean(0)]
            maps = [torch.stack([t.attention for t in teach]).float().mean(0)] if self.need_maps else []
        else:
            logits = [t.logits for t in teach]
            maps = [t.attention for t in teach] if self.need_maps else []
        losses = [label]
        if "prob" in s.knowledge:
            losses += [soft_kl(out.logits, z, s.T) for z in logits]
        if "att" in s.knowledge:
            losses += [s.att_weight * attention_distance(out.attention, q) for q in maps]
        return torch.stack(losses)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from ..ops import pcgrad
        from .gradients import apply_update, per_loss_gradients

        with self.autocast():
            losses = self.task_losses(x, y)
        opt = self.optimizers[0]
        opt.zero_grad(set_to_none=True)
        if self.settings.aggregate == "pcgrad":
            grads = per_loss_gradients(losses, self.params, batched=self.settings.batched_grads)
            # The order is drawn on the host from the run's seeded generator.
            result = pcgrad(grads, self.settings.order, self.order_rng,
                            reduction=self.settings.pcgrad_reduction)
            apply_update(self.params, result.update)
            self.conflicts += result.conflicts
            opt.step()
        else:
            self.scaler.scale(losses.sum()).backward()
            self.scaler.step(opt)
            self.scaler.update()
        self.step_t += 1
        return losses.sum().detach().reshape(1)

    # ------------------------------------------------------- epochs and state
    def fit(self) -> dict:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(_yaml(asdict(self.settings)), self.run_dir / "distill.yaml")
        return super().fit()

    def train_epoch(self) -> dict:
        row = super().train_epoch()
        if self.is_main and self.settings.aggregate == "pcgrad":
            ckpt.atomic_write_text(conflicts_csv(self.task_names, self.conflicts.cpu()),
                                   self.run_dir / "conflicts.csv")
        return row

    def _extra_state(self) -> dict:
        return {"conflicts": self.conflicts.cpu(), "order_rng": self.order_rng.get_state(),
                "tasks": self.task_names}

    def _load_extra_state(self, state: dict) -> None:
        if state.get("tasks") != self.task_names:
            raise ValueError(f"checkpoint tasks {state.get('tasks')} differ from this run's "
                             f"{self.task_names}; resume with the same distillation settings")
        self.conflicts = state["conflicts"].to(self.conflicts.device)
        self.order_rng.set_state(state["order_rng"])


def conflicts_csv(tasks: list[str], counts: torch.Tensor) -> str:
    """The conflict-count matrix as CSV: a header row of task names, then one
    row per task (first column its name)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", *tasks])
    for name, row in zip(tasks, counts.tolist()):
        w.writerow([name, *row])
    return buf.getvalue()


def read_conflicts_csv(path) -> tuple[list[str], torch.Tensor]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    tasks = rows[0][1:]
    return tasks, torch.tensor([[int(v) for v in r[1:]] for r in rows[1:]], dtype=torch.long)


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


__all__ = ["DistillSettings", "Distiller", "attention_distance", "conflicts_csv", "read_conflicts_csv",
           "soft_kl"]
