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
``kd_weight`` multiplies every prob/att term: with K teachers, the
gradient of the K summed KL terms with respect to the student's logits is
K times that of one KL to the teachers' mean probabilities, so
``kd_weight = 1/K`` gives the per-teacher sum the averaged target's
scale (docs/methods.md).
``aggregate="sum"`` back-propagates the sum of the task losses;
``aggregate="pcgrad"`` gets the task gradients with one batched backward,
projects them (``ktgfast.ops.pcgrad``) and counts conflicts per task pair
(``conflicts.csv``; tables 4.10-4.11 are its teacher blocks).

The student is the one node of a graph ``label -> student``, so loaders,
schedules, evaluation, metrics, checkpoints and ``--resume`` are the run
loop's; only the step differs.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ...data.recipes import default_model
from ...graph import AUTO_MODEL, Edge, Graph, Node
from ...models import ModelOutputs
from .. import checkpoint as ckpt
from ..build import build_node_model, epoch_scheduler, make_train_loader, resolved_lr, sgd
from ..run_dir import load_run
from ..update import update
from .base import Step
from .ktg import graph_of

TARGETS = ("per-teacher", "ensemble")
KNOWLEDGE = ("prob", "att")
AGGREGATIONS = ("sum", "pcgrad")
ORDERS = ("random", "fixed")
SPEED_ONLY = ("batched_grads",)  # settings a resume may change: the same numbers, another speed


@dataclass
class DistillSettings:
    teachers: str                          # run folder of a trained (ensemble) graph
    teacher_nodes: list[str] | None = None  # default: every model node of that graph
    student: str = AUTO_MODEL              # default: the first teacher's architecture
    target: str = "per-teacher"
    knowledge: list[str] = field(default_factory=lambda: ["prob"])
    T: float = 2.0
    att_weight: float = 1.0
    kd_weight: float = 1.0            # multiplies every prob/att term (1: the thesis's plain sum)
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
        for name in ("att_weight", "kd_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"distill.{name} = {v!r}; allowed: a number >= 0")
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
    """``T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``, batchmean over log-probabilities
    (Hinton et al. 2015; docs/methods.md)."""
    return T * T * F.kl_div(F.log_softmax(student_logits.float() / T, -1),
                            F.softmax(teacher_logits.float() / T, -1), reduction="batchmean")


class DistillStep(Step):
    """``Trainer(method="distill", settings=DistillSettings(...), data=..., config=...)``;
    ``ktgfast.train.distill.Distiller(settings, data, config)`` is the same."""

    mode = "distill"

    @classmethod
    def prepare(cls, run, graph, data, graph_params, options):
        settings = options.get("settings")
        if not isinstance(settings, DistillSettings):
            raise ValueError("method 'distill' needs settings=DistillSettings(teachers=RUN_DIR, ...)")
        settings.validate()
        teachers = load_run(settings.teachers, "cpu", data if not isinstance(data, str) else None,
                            settings.teacher_nodes)
        run.teachers_run = teachers
        if data is None:
            data = teachers.data
        elif isinstance(data, str):
            from .ktg import load_data

            data = load_data(run, data)
        student = settings.student
        if student == AUTO_MODEL:
            first = teachers.graph.node(next(iter(teachers.models)))
            student = default_model(teachers.data) if first.model == AUTO_MODEL else first.model
        graph = Graph([Node("student", student)], [Edge("label", "student", "ce")], "student",
                      name="distill")
        return graph_of(graph, {}), data

    def __init__(self, run, settings: DistillSettings):
        super().__init__(run)
        cfg, data = run.config, run.data
        self.settings = settings
        teachers = run.teachers_run
        self.teacher_names = list(teachers.models)
        self.task_names = self._task_names()
        if data.num_classes != teachers.data.num_classes:
            raise ValueError(f"the teachers in {settings.teachers!r} predict {teachers.data.num_classes} "
                             f"classes but dataset {data.name!r} has {data.num_classes}")
        if settings.aggregate == "pcgrad" and cfg.amp == "fp16":
            raise ValueError("aggregate='pcgrad' needs unscaled gradients: use amp bf16 or none, not fp16")
        self.order_rng = torch.Generator().manual_seed(cfg.seed)
        node = run.graph.nodes[0]
        self.names, self.learning = [node.name], [True]
        self.student = build_node_model(node, data, self.device, cfg.channels_last)
        self.models = torch.nn.ModuleList([self.student])
        self.lr = resolved_lr(cfg, data)
        self.optimizers = [sgd(self.student, self.lr, cfg)]
        self.schedulers = [epoch_scheduler(o, cfg, run.data) for o in self.optimizers]
        self.loader_name, self.train_loader = make_train_loader(run)
        self.steps_per_epoch = len(self.train_loader)
        self.num_periods = cfg.epochs
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.images_per_step = cfg.batch_size * run.dist.world_size
        self.teachers = [t.to(self.device) for t in teachers.models.values()]
        self.conflicts = torch.zeros(len(self.task_names), len(self.task_names), dtype=torch.long,
                                     device=self.device)
        self.params = [p for p in self.student.parameters() if p.requires_grad]
        self.need_maps = "att" in settings.knowledge
        self.check_sync_bn()
        self.student_forward = self._student_forward(run)

    def _student_forward(self, run):
        """The student's forward: through DDP under torchrun with ``aggregate=sum``.
        PCGrad needs the per-task gradients of the *global* batch (projected
        after the all-reduce, docs/distributed.md), which DDP's one averaged
        gradient cannot give: its student is a plain module whose initial
        weights are rank 0's, and ``_pcgrad`` all-reduces the task gradients."""
        from ...parallel.ddp import broadcast_, ddp_forward, module_tensors

        outputs = self.need_maps or getattr(self.student, "has_aux_logits", False)
        if run.dist.enabled and self.settings.aggregate == "sum":
            return ddp_forward(self.student, outputs, self.device, sync_bn=self.config.sync_bn)
        if run.dist.enabled:
            if self.config.sync_bn:  # in place: the same modules, parameters and buffers
                torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            broadcast_(module_tensors(self.student))
        return self.student.forward_outputs if outputs else self.student

    def _task_names(self) -> list[str]:
        s = self.settings
        sources = ["ensemble"] if s.target == "ensemble" else self.teacher_names
        return ["label"] + [f"{k}:{t}" for k in s.knowledge for t in sources]

    # ----------------------------------------------------------------- batches
    def steps_in_period(self, period: int) -> int:
        return self.steps_per_epoch

    def begin_period(self, period: int) -> None:
        self.train_loader.set_epoch(period)

    def batches(self, period: int):
        for x, y, _ in self.train_loader:
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    # -------------------------------------------------------------------- step
    def _outputs(self, model, x):
        if self.need_maps or getattr(model, "has_aux_logits", False):
            return model.forward_outputs(x)
        return ModelOutputs(model(x), None, None)

    def task_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(K,)`` task losses in the order of ``task_names``."""
        s = self.settings
        with torch.no_grad():
            teach = [self._outputs(t, x) for t in self.teachers]
        out = self.student_forward(x)
        if not isinstance(out, ModelOutputs):
            out = ModelOutputs(out, None, None)
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
        w = s.kd_weight
        if "prob" in s.knowledge:
            losses += [w * soft_kl(out.logits, z, s.T) for z in logits]
        if "att" in s.knowledge:
            losses += [w * s.att_weight * attention_distance(out.attention, q) for q in maps]
        return torch.stack(losses)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.run.autocast():
            losses = self.task_losses(x, y)
        if self.settings.aggregate == "pcgrad":
            update(self.optimizers, self.run.scaler, write_grads=lambda: self._pcgrad(losses))
        else:
            update(self.optimizers, self.run.scaler, losses.sum())
        return losses.sum().detach().reshape(1)

    def _pcgrad(self, losses: torch.Tensor) -> None:
        """PCGrad (Yu et al. 2020) of the task gradients into ``.grad``."""
        from ...ops import pcgrad
        from ..gradients import apply_update, per_loss_gradients

        grads = per_loss_gradients(losses, self.params, batched=self.settings.batched_grads)
        if self.run.dist.enabled:  # the task gradients of the global batch, on every rank
            from ...parallel.ddp import all_reduce_mean_

            all_reduce_mean_(grads, self.run.dist.world_size)
        # The order is drawn on the host from the run's seeded generator.
        result = pcgrad(grads, self.settings.order, self.order_rng,
                        reduction=self.settings.pcgrad_reduction)
        apply_update(self.params, result.update)
        self.conflicts += result.conflicts

    # ------------------------------------------------------- periods and state
    def write_run_files(self) -> None:
        ckpt.atomic_write_text(_yaml(asdict(self.settings)), self.run.run_dir / "distill.yaml")
        super().write_run_files()

    def end_period(self, row: dict) -> None:
        if self.run.is_main and self.settings.aggregate == "pcgrad":
            ckpt.atomic_write_text(conflicts_csv(self.task_names, self.conflicts.cpu()),
                                   self.run.run_dir / "conflicts.csv")

    def extra_state(self) -> dict:
        return {"conflicts": self.conflicts.cpu(), "order_rng": self.order_rng.get_state(),
                "tasks": self.task_names, "settings": asdict(self.settings)}

    def load_extra_state(self, state: dict) -> None:
        if state.get("tasks") != self.task_names:
            raise ValueError(f"checkpoint tasks {state.get('tasks')} differ from this run's "
                             f"{self.task_names}; resume with the same distillation settings")
        saved = state.get("settings")  # absent in checkpoints written before it was saved
        if saved is not None:
            defaults = asdict(DistillSettings(teachers=""))
            for name, value in asdict(self.settings).items():
                old = saved.get(name, defaults[name])
                if name not in SPEED_ONLY and old != value:
                    raise ValueError(f"distill.{name} = {value!r} differs from the checkpoint's {old!r}; "
                                     "a resumed distillation keeps its settings (start a new --out to "
                                     "change them)")
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


__all__ = ["DistillSettings", "DistillStep", "attention_distance", "conflicts_csv", "read_conflicts_csv",
           "soft_kl"]
