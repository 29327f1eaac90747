"""Training: the fused KTG step, schedules, checkpoints, metrics."""
from .config import TrainConfig
from .run import NonFiniteLossError, Trainer

__all__ = ["NonFiniteLossError", "TrainConfig", "Trainer"]
