"""Ensemble -> one student from Python: ``Distiller(settings, data, config)``
is the run loop with the ``distill`` step (``steps/distill.py``, where the
method is documented)."""
from .config import TrainConfig
from .run import Trainer
from .steps.distill import (AGGREGATIONS, KNOWLEDGE, ORDERS, TARGETS, DistillSettings, DistillStep,
                            attention_distance, conflicts_csv, read_conflicts_csv, soft_kl)


class Distiller(Trainer):
    """``Distiller(settings, data, config).fit()`` trains the student (``data``
    None: the teachers' dataset)."""

    method = "distill"

    def __init__(self, settings: DistillSettings, data=None, config: TrainConfig | None = None, *,
                 resume: bool = False, overwrite: bool = False):
        super().__init__(None, data, config, resume=resume, overwrite=overwrite, settings=settings)


__all__ = ["AGGREGATIONS", "DistillSettings", "DistillStep", "Distiller", "KNOWLEDGE", "ORDERS",
           "TARGETS", "attention_distance", "conflicts_csv", "read_conflicts_csv", "soft_kl"]
