"""Analysis of trained graphs (thesis §4.2, §4.4): diversity between models
(MutualKL, ΔAccuracy, attention-map error) and gradient conflicts of a
distillation; ``ktgfast analyze RUN_DIR`` writes tables and plots."""
from .metrics import attention_abs_error, delta_accuracy, mutual_kl, normalise_map
from .report import analyze_run

__all__ = ["analyze_run", "attention_abs_error", "delta_accuracy", "mutual_kl", "normalise_map"]
