"""The one run loop: periods (epochs, or evaluation periods of an iteration
schedule), evaluation, metrics, checkpoints, resume, the NaN/Inf check, the
progress bar and the run folder.  It knows nothing about graphs: what one
step computes is the method's *step* (``ktgfast.train.steps``, one file per
method), found by name in a registry.

    for period in periods:
        for batch in step.batches(period):      # the method says what a batch is
            node_loss = step.train_step(*batch)  # forwards, losses, one update
            book(node_loss)                      # on the device; read every log_every
        step.end_training_period()              # e.g. per-epoch lr schedules
        evaluate -> step.end_period(row) -> metrics -> checkpoint

The step reads nothing back from the device: the loss check and the progress
bar read device tensors every ``log_every`` steps.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from . import resume as resume_rules
from .build import autocast
from .config import TrainConfig
from ..data.fingerprint import data_fingerprint
from ..parallel.ddp import sync_buffers
from ..parallel.env import DistEnv
from ..parallel.eval import all_reduce_sum, eval_shard
from .lowering import EnsembleNode
from .metrics import MetricsLog
from .steps import resolve_method, step_class


class EpochLosses:
    """Per-node loss sums of a period, which nodes stayed finite and the first
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device = {name!r} but no CUDA device is available; use cpu or auto")
    return dev


class Trainer:
    """Train a graph on a dataset with a method (``--method``; default: ``ssl``
    for semi-supervised graphs or ``labels_per_class``, else ``ktg``).

    >>> Trainer("dml", "mnist5k", TrainConfig(epochs=3)).fit()   # doctest: +SKIP

    Attributes the step owns (models, optimizers, forwards, its tables and
    state) are readable on the trainer too: ``trainer.models`` is
    ``trainer.step.models``.
    """

    method: str | None = None  # a subclass may fix it (SemiSupervisedTrainer = "ssl")

    def __init__(self, graph=None, data=None, config: TrainConfig | None = None, *,
                 resume: bool = False, overwrite: bool = False, graph_params: dict | None = None,
                 method: str | None = None, **options):
        self.config = cfg = (config or TrainConfig()).validate()
        self.method = resolve_method(method or self.method, graph, cfg, graph_params)
        cfg.check_method(self.method)
        self.dist = DistEnv.from_env(cfg.device)
        self.is_main = self.dist.rank == 0
        if self.dist.restart and cfg.out is not None and not resume \
                and (Path(cfg.out) / "checkpoint.pt").exists():
            # torchrun restarted the workers after a failure (--max-restarts): the
            # same command continues the run from its last checkpoint.
            resume, overwrite = True, False
            self._print(f"torchrun restart {self.dist.restart}: resuming {cfg.out!r} from its checkpoint")
        # The run folder is checked before any data loading or model building.
        self._saved: dict | None = None
        self.config_changes: dict[str, tuple] = {}
        if cfg.out is not None:
            self._check_run_dir(Path(cfg.out), resume, overwrite, data)
        elif resume:
            raise ValueError("--resume needs --out: the run folder to continue")
        steps = step_class(self.method)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(self.dist.device(cfg.device))  # cuda: cuda:LOCAL_RANK
        # The method's graph and data (e.g. the one student node, the labelled split).
        self.graph, self.data = steps.prepare(self, graph, data, graph_params or {}, options)
        for split in cfg.eval_splits:
            if getattr(self.data, split, None) is None:
                raise ValueError(f"config.eval_splits asks for {split!r} but dataset "
                                 f"{self.data.name!r} has no {split} split")
        self.run_dir = Path(cfg.out or f"runs/{self.graph.name or 'graph'}-{self.data.name}-"
                                        f"{time.strftime('%Y%m%d-%H%M%S')}")
        self._seed(cfg.seed + self.dist.rank)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        # Device-side step counter: progress k / (k_end - 1) reaches 1 at the last step.
        self.step_t = torch.zeros((), dtype=torch.float64, device=self.device)
        self.epoch = 0
        self._warmed_up = False  # the process's first step is timed apart (train_epoch)
        self.last_eval_s: dict[str, float] = {}
        self.step = steps(self, **options)
        self.total_steps = self.step.total_steps
        self.progress_div = float(max(self.total_steps - 1, 1))
        self.log = MetricsLog(self.run_dir, cfg.tensorboard, enabled=self.is_main)
        if resume:
            self._resume()

    def _check_run_dir(self, run_dir: Path, resume: bool, overwrite: bool, data=None) -> None:
        """Refuse a new run in a folder that holds one; on resume, load the
        checkpoint and check its method and config (``resume.FIELDS``)."""
        if self.is_main:
            resume_rules.remove_stale_temps(run_dir)
        if resume:
            if overwrite:
                raise ValueError("--resume and --overwrite contradict each other; pass one")
            path = run_dir / "checkpoint.pt"
            state = ckpt.load(path)
            where = repr(str(run_dir))
            resume_rules.check_same("method", state.get("method"), self.method, where, "--method")
            self.config_changes = resume_rules.compare(state.get("config", {}), self.config, where)
            if isinstance(data, str) and state.get("data"):  # a name: checked before loading it
                resume_rules.check_same("data set", state["data"]["name"], data, where)
            self._saved = state
        elif self.is_main:
            removed = resume_rules.check_fresh(run_dir, overwrite)
            if removed:
                self._print(f"--overwrite: deleted the run files of {str(run_dir)!r}: {', '.join(removed)}")

    def __getattr__(self, name: str):
        # Only for names the trainer lacks: the step's models, tables and state.
        step = self.__dict__.get("step")
        if step is None or name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(step, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__!r} (method {self.method!r}) has no "
                                 f"attribute {name!r}") from None

    # ------------------------------------------------------------- helpers
    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def autocast(self):
        return autocast(self.device, self.config.amp)

    def progress(self) -> torch.Tensor:
        """``k / (k_end − 1)`` on the device."""
        return self.step_t / self.progress_div

    @property
    def num_epochs(self) -> int:
        """Periods ``fit`` runs at most (epochs, or evaluation periods)."""
        return self.step.num_periods

    @property
    def history(self) -> list[dict]:
        return self.log.history

    # ------------------------------------------------------------------ step
    def train_step(self, *batch) -> torch.Tensor:
        """One step of the method on ``batch`` (what ``step.batches`` yields);
        returns the per-node losses (on the device)."""
        node_loss = self.step.train_step(*batch)
        self.step_t += 1
        return node_loss

    # ---------------------------------------------------------------- periods
    def fit(self) -> dict:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(_yaml({"config": self.config.to_dict(), "data": self.data.name,
                                          "method": self.method, "resolved": self.step.resolved()}),
                                   self.run_dir / "config.yaml")
            resumes = getattr(self, "resumes", [])
            if resumes:
                # config.yaml holds the values in use now; earlier values are in resumes.yaml.
                ckpt.atomic_write_text(_yaml({"resumes": resumes}), self.run_dir / "resumes.yaml")
            self.step.write_run_files()
        result = self.history[-1] if self.history else {}
        if self.history and self._finished():
            self._print(f"run {str(self.run_dir)!r} is finished ({self.epoch} of {self.num_epochs} "
                        "periods); nothing to train (ask for more with --epochs)")
        with _stop_on_sigterm(self.dist.enabled):
            try:
                while not self._finished():
                    result = self.train_epoch()
            except BaseException as exc:
                if self.dist.enabled and not isinstance(exc, NonFiniteLossError):
                    exc.add_note(self._stop_note())
                raise
        self.log.close()
        self._print_summary()
        return self.step.result(result)

    def _print_summary(self) -> None:
        """The run's best epoch (by validation accuracy of the target node, never
        by test), its accuracies per node, the run folder and TensorBoard."""
        target = self.graph.target_name if self.graph.target_name in self.step.names else self.step.names[0]
        key = f"val_acc:{target}"
        rows = [r for r in self.history if key in r]
        lines = []
        if rows:
            best = max(rows, key=lambda r: r[key])
            accs = "  ".join(f"{k} {v:.2f}%" for k, v in best.items() if "_acc:" in k)
            lines.append(f"best epoch {best['epoch']} (by {key}): {accs}")
        lines.append(f"run folder: {self.run_dir}")
        if self.config.tensorboard and (self.run_dir / "tb").exists():
            lines.append(f"curves: tensorboard --logdir {self.run_dir / 'tb'}")
        self._print("\n".join(lines))

    def _stop_note(self) -> str:
        """What a rank that stops mid-run says (under torchrun, beside its summary)."""
        last = self.run_dir / "checkpoint.pt"
        kept = (f"epoch {self.epoch} was its last completed one; checkpoint {str(last)!r}" if last.exists()
                else "no checkpoint was written yet")
        return (f"ktgfast: rank {self.dist.rank} of {self.dist.world_size} stopped in epoch {self.epoch + 1}; "
                f"{kept}. If another rank failed (torchrun's summary names it), relaunch the same "
                "command with --resume, or let torchrun --max-restarts N restart it from the checkpoint.")

    def _finished(self) -> bool:
        return self.step.finished() or self.epoch >= self.num_epochs

    def train_epoch(self) -> dict:
        """One period: its steps, then evaluation, metrics and a checkpoint."""
        step = self.step
        period = self.epoch + 1
        if period > self.num_epochs:
            raise RuntimeError(f"training is complete ({self.num_epochs} periods)")
        step.begin_period(period)
        for m, learns in zip(step.models, step.learning):
            m.train(learns)
        lr = step.optimizers[0].param_groups[0]["lr"] if step.optimizers else 0.0
        losses = EpochLosses(len(step.names), self.device)
        total = step.steps_in_period(period)
        bar = self._bar(period, total)
        t0 = time.perf_counter()
        done = 0
        warmup_s = None
        for batch in step.batches(period):
            node_loss = self.train_step(*batch)
            done += 1
            if done == 1 and not self._warmed_up:
                # The process's first step also pays for lazy set-up (allocator,
                # thread pools, kernel selection): timed apart so img/s is the
                # steady speed.  One host sync per process.
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                warmup_s, self._warmed_up = time.perf_counter() - t0, True
            losses.add(node_loss, self.step_t - 1)
            if done % self.config.log_every == 0 or done == total:
                self._check_finite(losses, period)
                if bar is not None:
                    bar.set_postfix(loss=f"{(losses.sum.sum() / done).item():.3f}")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        step.end_training_period()
        if self.dist.enabled:
            # One model on every rank before evaluation and the checkpoint: the
            # BatchNorm statistics become rank 0's (docs/distributed.md), the
            # losses of the metrics the mean over the ranks that booked them.
            sync_buffers(step.models)
            all_reduce_sum(losses.sum, self.dist.world_size).div_(step.loss_replicas())
        self.epoch = period
        steady_steps, steady_s = done - (warmup_s is not None), train_time - (warmup_s or 0.0)
        row = {"epoch": period, "step": int(self.step_t.item()), "time_s": round(train_time, 3),
               "images_per_s": round(steady_steps * step.images_per_step / max(steady_s, 1e-9), 1),
               "lr": lr}
        if warmup_s is not None:
            row["warmup_s"] = round(warmup_s, 3)
        for n, l, learns in zip(step.names, (losses.sum / max(done, 1)).tolist(), step.learning):
            if learns:
                row[f"train_loss:{n}"] = round(l, 6)
        row.update(step.period_columns(done))
        self.last_eval_s = {}
        for split in self.config.eval_splits:
            t1 = time.perf_counter()
            for k, v in self.evaluate(split).items():
                row[f"{split}_acc:{k}"] = round(v, 4)
            self.last_eval_s[split] = time.perf_counter() - t1
        step.end_period(row)
        self.log.add(row)          # in the history before the checkpoint saves it
        self._save_checkpoint()
        self.log.write(row)
        self._print(_console(row))
        for line in step.messages():
            self._print(line)
        return row

    def _check_finite(self, losses: EpochLosses, period: int) -> None:
        finite, first_bad = losses.finite, losses.first_bad
        if self.dist.enabled:  # every rank stops at the same step, naming the same nodes
            finite, first_bad = _agree_finite(finite, first_bad)
        if bool(finite.all()):
            return
        bad = [n for n, ok in zip(self.step.names, finite.tolist()) if not ok]
        last = self.run_dir / "checkpoint.pt"
        kept = f"the last good checkpoint {str(last)!r} (epoch {self.epoch}) is kept" if last.exists() \
            else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"loss of node {', '.join(map(repr, bad))} became NaN/Inf at step {int(first_bad.item())} "
            f"(epoch {period}); {kept}. Lower the learning rate, check the data, or use amp=none.")

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Top-1 accuracy (%) of every evaluated node and of the ensemble (the
        mean logits of every model node)."""
        from ..data import TensorLoader

        data = getattr(self.data, split)
        # Built once per split: on a GPU each build would copy the split to the device.
        loaders = self.__dict__.setdefault("_eval_loaders", {})
        if split not in loaders:
            # Under torchrun each rank evaluates its own contiguous chunk; the
            # hit counts are summed over ranks (exact: nothing padded).
            a, b = eval_shard(len(data.labels), self.dist.rank, self.dist.world_size)
            part = data if (a, b) == (0, len(data.labels)) else _rows(data, a, b)
            loaders[split] = TensorLoader(part, self.config.eval_batch_size, shuffle=False,
                                          drop_last=False, augment=None, mean=self.data.mean,
                                          std=self.data.std, device=self.device)
        step = self.step
        models, names = step.models, step.names
        for m in models:
            m.eval()
        real = [i for i, m in enumerate(models) if not isinstance(m, EnsembleNode)]
        hits = torch.zeros(len(names) + 1, dtype=torch.long, device=self.device)
        for x, y, _ in loaders[split]:
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                z: list = [None] * len(names)
                for i in real:
                    z[i] = models[i](x).float()
            for i, members in step.ensembles.items():
                z[i] = torch.stack([z[j] for j in members]).mean(0)
            zs = torch.stack(z)
            hits[:-1] += (zs.argmax(-1) == y).sum(-1)
            hits[-1] += (zs[real].mean(0).argmax(-1) == y).sum()
        all_reduce_sum(hits, self.dist.world_size)
        acc = (100.0 * hits.double() / len(data.labels)).tolist()
        # "ensemble": the mean over every model node, unless a node has that name
        # (and none for one model node: it would repeat that node's accuracy).
        out = dict(zip(names, acc[:-1]))
        if len(real) > 1:
            out.setdefault("ensemble", acc[-1])
        return out

    # ------------------------------------------------------------- checkpoints
    def state_dict(self, rng_ranks: list | None = None) -> dict:
        """The checkpoint.  ``rng_ranks``: every rank's RNG state, in rank order
        (gathered by :meth:`_save_checkpoint`; default: this process's)."""
        step = self.step
        return {
            "epoch": self.epoch,
            "step": self.step_t.item(),
            "method": self.method,
            "models": [m.state_dict() for m in step.models],
            "optimizers": [o.state_dict() for o in step.optimizers],
            "schedulers": [s.state_dict() for s in step.schedulers],
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "rng_ranks": rng_ranks if rng_ranks is not None else [ckpt.rng_state()],
            "graph_key": self.graph.key(),
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
            "history": self.history,
            "data": self._data_id(),
            "resumes": getattr(self, "resumes", []),
            **step.extra_state(),
        }

    def _save_checkpoint(self) -> None:
        if not self.config.checkpoint:
            return
        rngs = ckpt.gather_rng_states(self.dist.world_size)  # a collective under torchrun
        if self.is_main:
            ckpt.atomic_save(self.state_dict(rngs), self.run_dir / "checkpoint.pt")

    def _data_id(self) -> dict:
        return {"name": self.data.name, "fingerprint": data_fingerprint(self.data.train)}

    def _resume(self) -> None:
        path = self.run_dir / "checkpoint.pt"
        state, self._saved = self._saved, None
        where = repr(str(self.run_dir))
        if state["graph_key"] != self.graph.key():
            raise resume_rules.RunFolderError(
                f"cannot resume {where}: checkpoint {str(path)!r} belongs to a different graph "
                f"({resume_rules.describe_graph_key(state['graph_key'])}; this run: "
                f"{resume_rules.describe_graph_key(self.graph.key())}); resume with the same "
                "graph or choose another --out")
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise resume_rules.RunFolderError(
                f"cannot resume {where}: it was trained on {saved_world} process(es), this launch has "
                f"{self.dist.world_size}; the per-rank batches and the global batch would change, so "
                f"launch with --nproc-per-node/--nnodes giving WORLD_SIZE={saved_world}")
        saved_data = state.get("data")
        if saved_data is not None:
            now = self._data_id()
            resume_rules.check_same("data set", saved_data["name"], now["name"], where)
            resume_rules.check_same("data set content (fingerprint of the training split)",
                                    saved_data["fingerprint"], now["fingerprint"], where)
        step = self.step
        for m, s in zip(step.models, state["models"]):
            m.load_state_dict(s)
        for o, s in zip(step.optimizers, state["optimizers"]):
            o.load_state_dict(s)
        for sch, s in zip(step.schedulers, state["schedulers"]):
            sch.load_state_dict(s)
        step.load_extra_state(state)
        self.scaler.load_state_dict(state["scaler"])
        # Each rank continues its own random streams (one saved per rank).
        rngs = state.get("rng_ranks") or [state["rng"]]
        ckpt.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self.epoch = state["epoch"]
        self.step_t.fill_(state["step"])
        self.log.history = list(state["history"])
        self.resumes = list(state.get("resumes", []))
        self.resumes.append({"at_epoch": self.epoch, "at_step": int(state["step"]),
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "changed": {k: {"was": a, "now": b} for k, (a, b) in self.config_changes.items()}})
        changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in self.config_changes.items())
        self._print(f"resumed {str(path)!r} at epoch {self.epoch} (step {int(state['step'])})"
                    + (f"; changed: {changed}" if changed else ""))

    # ----------------------------------------------------------------- output
    def _bar(self, period: int, total: int):
        show = self.config.progress_bar
        if show is None:
            show = sys.stderr.isatty()
        if not (show and self.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {period}/{self.num_epochs}", leave=False,
                    dynamic_ncols=True)

    def _print(self, text: str) -> None:
        if self.is_main and self.config.verbose:
            print(text, flush=True)

    def render_graph(self, path: str | os.PathLike) -> Path:
        from ..graph import render

        return render(self.graph, path)


def _console(row: dict) -> str:
    accs = "  ".join(f"{k.split('_acc:')[0]}:{k.split(':')[1]} {v:.2f}%" for k, v in row.items()
                     if "_acc:" in k)
    warm = f" (first step {row['warmup_s']:.1f}s: warm-up)" if "warmup_s" in row else ""
    return f"epoch {row['epoch']:>3}  {row['time_s']:6.1f}s{warm}  {row['images_per_s']:8.1f} img/s  {accs}"


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False)


class RankStopped(RuntimeError):
    """SIGTERM under torchrun: the agent stops every rank when one fails."""


@contextlib.contextmanager
def _stop_on_sigterm(enabled: bool):
    """Under torchrun, SIGTERM raises :class:`RankStopped` (so the rank says
    where the run stands) instead of ending the process silently."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise RankStopped("SIGTERM: torchrun stops every rank when one fails (its summary names the rank)")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _agree_finite(finite: torch.Tensor, first_bad: torch.Tensor):
    """``(finite, first_bad)`` over all ranks: a node is finite where it is on
    every rank; the first bad step is the earliest of any rank (one collective)."""
    import torch.distributed as dist

    bad = torch.where(first_bad < 0, torch.full_like(first_bad, float("inf")), first_bad)
    packed = torch.cat([finite.double(), bad.reshape(1)])
    dist.all_reduce(packed, op=dist.ReduceOp.MIN)
    return packed[:-1] > 0, packed[-1]


def _rows(split, a: int, b: int):
    """Rows ``[a, b)`` of a split (images, labels and what else it carries)."""
    import dataclasses

    fields = {f.name: getattr(split, f.name) for f in dataclasses.fields(split)}
    return dataclasses.replace(split, **{k: v[a:b] if isinstance(v, torch.Tensor) else v
                                         for k, v in fields.items()})


__all__ = ["EpochLosses", "NonFiniteLossError", "Trainer", "resolve_device"]
