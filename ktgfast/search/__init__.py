"""Graph-structure search: spaces, Optuna study with ASHA, workers, outputs."""
from .space import SearchSpace, builtin_spaces, load_space
from .study import SearchSettings, StudyResult, search

__all__ = ["SearchSettings", "SearchSpace", "StudyResult", "builtin_spaces", "load_space", "search"]
