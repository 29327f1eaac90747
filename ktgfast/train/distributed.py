"""The process-group facts the run loop reads (``ktgfast.dist``)."""
from ..dist.env import DistEnv

__all__ = ["DistEnv"]
