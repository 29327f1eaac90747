"""Semi-supervised KTG from Python: ``SemiSupervisedTrainer`` is the run loop
with the ``ssl`` step (``steps/ssl.py``, where the method is documented)."""
from .lowering import SSLSlots
from .run import Trainer
from .steps.ssl import MU, SemiSupervisedStep, wants_semi_supervised


class SemiSupervisedTrainer(Trainer):
    """``SemiSupervisedTrainer("fixmatch", "mnist5k", TrainConfig(labels_per_class=10)).fit()``;
    ``Trainer(...)`` picks this method by itself for semi-supervised graphs."""

    method = "ssl"


__all__ = ["MU", "SSLSlots", "SemiSupervisedStep", "SemiSupervisedTrainer", "wants_semi_supervised"]
