"""What a training method gives the run loop (``ktgfast.train.run``).

A step is built by the loop as ``StepClass(run, **options)`` after
``StepClass.prepare(run, graph, data, graph_params, options)`` returned the
method's graph and dataset.  It then provides:

* ``models`` (a ModuleList saved in checkpoints and evaluated), ``names``
  (one per model), ``learning`` (which train), ``ensembles`` (slot -> member
  slots, averaged at evaluation), ``optimizers`` and ``schedulers``;
* ``total_steps`` (the progress ``k / (k_end − 1)`` of gates), ``num_periods``
  and ``steps_in_period(p)``, ``images_per_step`` (over all ranks);
* ``batches(p)``: the argument tuples of ``train_step`` for period ``p``;
* ``train_step(*batch) -> (len(names),) losses`` on the device, ending in
  the shared ``ktgfast.train.update.update``.

The hooks below have neutral defaults; a step overrides the ones it needs.
"""
from __future__ import annotations


class Step:
    ensembles: dict = {}
    schedulers: list = []

    @classmethod
    def method_name(cls) -> str:
        return getattr(cls, "mode", None) or cls.__name__

    def __init__(self, run):
        self.run = run
        self.config = run.config
        self.device = run.device

    # -- data parallel (docs/distributed.md) ----------------------------------
    def check_sync_bn(self) -> None:
        """``--sync-bn`` needs CUDA: PyTorch's SyncBatchNorm has no CPU kernel."""
        if self.config.sync_bn and self.device.type != "cuda":
            raise ValueError("config.sync_bn = True (--sync-bn): SyncBatchNorm runs only on CUDA devices; "
                             "on CPU each rank's BatchNorm normalises with its own batch and the running "
                             "statistics are rank 0's (docs/distributed.md); drop --sync-bn")

    def node_forward(self, model, learns: bool, outputs: bool = False):
        """What a step calls for a node: ``model`` (or ``model.forward_outputs``
        with ``outputs``); a learning node's through DDP under torchrun
        (frozen, EMA and ensemble nodes are never wrapped: DDP refuses modules
        without trainable parameters, and they need no gradient all-reduce);
        compiled on request."""
        import torch

        from ...parallel.ddp import ddp_forward

        if self.run.dist.enabled and learns:
            fn = ddp_forward(model, outputs, self.device, sync_bn=self.config.sync_bn)
        else:
            fn = model.forward_outputs if outputs else model
        return torch.compile(fn) if self.config.compile else fn

    # -- the period's edges -------------------------------------------------
    def begin_period(self, period: int) -> None:
        """Before the period's first step (loaders' epochs, per-period state)."""

    def end_training_period(self) -> None:
        """After the period's last step, before evaluation (per-epoch schedules)."""
        for s in self.schedulers:
            s.step()

    def loss_replicas(self) -> int:
        """How many ranks book each node's training loss: the run loop's sum
        over ranks is divided by it (data parallel: every rank)."""
        return self.run.dist.world_size

    def period_columns(self, steps: int) -> dict:
        """Extra metrics columns of the period, before the accuracies."""
        return {}

    def end_period(self, row: dict) -> None:
        """After evaluation, before the checkpoint: may add columns to ``row``."""

    def messages(self) -> list[str]:
        """Lines to print after the period's console line."""
        return []

    def finished(self) -> bool:
        """An end rule of the method's own (the loop also stops at num_periods)."""
        return False

    # -- run folder and result ----------------------------------------------
    def write_run_files(self) -> None:
        """Files the method writes into the run folder before training: the
        graph it trains (and its summary on the console)."""
        from ...graph import save_graph, summary
        from ..build import model_name

        run = self.run
        save_graph(run.graph, run.run_dir / "graph.yaml")
        run._print(summary(run.graph, {n.name: model_name(n, run.data) for n in run.graph.nodes
                                       if not n.is_ensemble}))

    def resolved(self) -> dict:
        """What the defaults became for this run (written to config.yaml):
        the lr, the schedule, the models that ``auto`` became, the loader."""
        from ..build import model_name, resolved_schedule

        run, cfg = self.run, self.config
        out = {"lr": getattr(self, "lr", None), "schedule": resolved_schedule(cfg, run.data)}
        if out["schedule"] == "multistep":
            out["milestones"] = cfg.resolved_milestones()
        out["models"] = {n.name: model_name(n, run.data) for n in run.graph.nodes if not n.is_ensemble}
        if hasattr(self, "loader_name"):
            out["loader"] = self.loader_name
        out.update(total_steps=self.total_steps, periods=self.num_periods)
        return out

    def result(self, last_row: dict) -> dict:
        """What ``fit`` returns (the last period's metrics row by default)."""
        return last_row

    # -- checkpoints ----------------------------------------------------------
    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


__all__ = ["Step"]
