"""Self-distillation and Born-Again Networks from Python: the run loop with
the ``self-distill`` or ``ban`` step (``steps/self_distill.py``, where the
method and its decisions are documented)."""
from .run import Trainer
from .steps.self_distill import (BANK_WEIGHT, MODES, SUMMARY_KEYS, BornAgainStep, SelfDistillStep,
                                 bank_target, generation_loss, soft_cross_entropy, student_graph,
                                 summaries_csv)


class SelfDistillTrainer(Trainer):
    """``SelfDistillTrainer("vanilla", "mnist5k", TrainConfig(generations=3)).fit()``
    returns ``{"generations": [per-generation summary, ...], **last summary}``."""

    method = "self-distill"


class BornAgainTrainer(Trainer):
    """Plain BAN, same plateau rules and bookkeeping, no bank."""

    method = "ban"


__all__ = ["BANK_WEIGHT", "BornAgainStep", "BornAgainTrainer", "MODES", "SUMMARY_KEYS",
           "SelfDistillStep", "SelfDistillTrainer", "bank_target", "generation_loss",
           "soft_cross_entropy", "student_graph", "summaries_csv"]
