"""Training configuration: defaults < YAML file < command-line flags.

Every field is also a ``ktgfast train --field-name`` flag (generated from this
dataclass), and the resolved configuration is saved in the run folder.
"""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

# auto: the dataset recipe's (ktgfast.data.recipes; docs/rampup.md)
SCHEDULES = ("auto", "multistep", "cosine", "constant")
AMP_MODES = ("none", "bf16", "fp16")
AUGMENTS = ("auto", "none", "crop", "crop_flip")
PAD_MODES = ("reflect", "zero")
EVAL_SPLITS = ("val", "test")
LOADERS = ("auto", "tensor", "torch", "dali")  # = ktgfast.data.LOADER_CHOICES
# = ("none", *ktgfast.data.mixup.POLICIES); the superclass ones read superclass maps
MIXUPS = ("none", "beta", "superclass_beta", "superclass_select")
SUPERCLASS_MIXUPS = ("superclass_beta", "superclass_select")
# replicate: the whole graph on every rank (data parallel); spread: each rank runs its own nodes
# on the same batch (node parallel, docs/node_parallel.md)
PLACEMENTS = ("replicate", "spread")


# Fields that only some methods read, by group: (the methods, the fields).  A
# field of a group set away from its default for another method is an error
# that names the method (``TrainConfig.check_method``).
METHOD_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "semi-supervised": (("ssl",), ("labels_per_class", "label_seed", "unlabeled_batch_size",
                                   "iterations", "eval_every", "ema_decay", "randaugment_n",
                                   "randaugment_m", "randaugment_random_magnitude")),
    "mixup": (("ktg",), ("mixup", "mixup_alpha", "superclass_map")),
    "node-parallel": (("ktg",), ("placement",)),
    "generations": (("self-distill", "ban"), ("generations", "plateau_patience",
                                              "generation_patience", "lr_floor",
                                              "max_epochs_per_generation")),
}


class ConfigError(ValueError):
    """A bad config value, naming the field, the value and what is allowed.

    ``where`` is how the user wrote it, so the message uses their words:
    ``"config"`` (Python: ``config.epochs = 0``), a YAML file name
    (``run.yaml: epochs = 0``) or ``"flags"`` (the CLI: ``--epochs 0``)."""

    def __init__(self, name: str, value, allowed: str, where: str = "config"):
        self.name, self.value, self.allowed, self.where = name, value, allowed, where
        super().__init__(self._text())

    def _text(self) -> str:
        if self.where == "flags":
            value = ",".join(map(str, self.value)) if isinstance(self.value, list) else self.value
            if isinstance(value, bool) or value is None:
                value = str(value).lower()
            return f"--{self.name.replace('_', '-')} {value}: allowed: {self.allowed}"
        prefix = "config." if self.where == "config" else f"{self.where}: "
        return f"{prefix}{self.name} = {self.value!r}; allowed: {self.allowed}"

    def at(self, where: str) -> "ConfigError":
        return ConfigError(self.name, self.value, self.allowed, where)

    def __reduce__(self):  # picklable across worker processes
        return ConfigError, (self.name, self.value, self.allowed, self.where)


@dataclass
class TrainConfig:
    # optimisation (Minami et al. 2020 recipe: SGD, Nesterov 0.9, lr 0.1, batch 64)
    epochs: int = 200
    batch_size: int = 64
    lr: float | None = None  # None: the dataset's recipe (ktgfast.data.recipes)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "auto"  # auto: the dataset recipe's (cosine; CIFAR: multistep); docs/rampup.md
    milestones: list[int] | None = None  # None: 30 %, 60 %, 90 % of epochs (60/120/180 of 200)
    gamma: float = 0.1
    # data
    val_size: float | None = None  # carve a validation split from train (count or fraction)
    augment: str = "auto"          # auto: crop + flip for natural images, crop for digits
    pad: int = 4
    pad_mode: str = "reflect"
    data_root: str | None = None
    download: bool = False
    eval_splits: list[str] = field(default_factory=lambda: ["val", "test"])
    eval_batch_size: int = 1000
    loader: str = "auto"           # auto | tensor | torch | dali (auto: by dataset kind and device)
    # semi-supervised graphs (read by the ssl method, docs/semi_supervised.md)
    labels_per_class: int | None = None     # labelled images per class; None: all (unlabelled = train)
    label_seed: int | None = None           # seed of the labelled/unlabelled split; None: seed
    unlabeled_batch_size: int | None = None  # None: 7 x batch_size (FixMatch's mu = 7)
    iterations: int | None = None           # total steps; None: epochs x eval_every
    eval_every: int | None = None           # steps per evaluation; None: one pass over the unlabelled set
    ema_decay: float = 0.999                # alpha of EMA nodes (eq. 5.2)
    randaugment_n: int = 2                  # strong view: ops per image
    randaugment_m: float = 9.0              # level on the 0..30 scale (torchvision's default 9)
    randaugment_random_magnitude: bool = False  # level uniform in [0, m] per op (FixMatch style)
    mixup: str = "none"            # none | beta | superclass_beta | superclass_select (docs/mixup.md)
    mixup_alpha: float = 1.0       # Beta(α, α) of mixup "beta"
    superclass_map: str | None = None  # JSON fine -> superclass; default: the dataset's own
    # speed
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    sync_bn: bool = False        # under torchrun: SyncBatchNorm across ranks (CUDA only)
    placement: str = "replicate"  # under torchrun: replicate (data parallel) | spread (node parallel)
    compile: bool = False
    threads: int | None = None
    # run
    seed: int = 0
    out: str | None = None
    log_every: int = 50          # steps between host reads (NaN check, progress bar)
    progress_bar: bool | None = None  # None: when stderr is a terminal
    tensorboard: bool = True
    checkpoint: bool = True      # write checkpoint.pt every epoch (searches turn it off)
    verbose: bool = True         # print the graph and one line per epoch
    pretrain_cache: str | None = None  # default: $KTGFAST_CACHE or ~/.cache/ktgfast
    # generations (--method self-distill | ban, docs/self_distillation.md; ``epochs`` caps the whole run)
    generations: int = 3
    plateau_patience: int = 20       # epochs without a val gain: reset to best, lr *= gamma
    generation_patience: int = 40    # epochs without a val gain: next generation
    lr_floor: float = 0.001          # the plateau decay never goes below it
    max_epochs_per_generation: int | None = None  # safety cap (none: only the patiences)

    def validate(self) -> "TrainConfig":
        def bad(name, allowed):
            raise ConfigError(name, getattr(self, name), allowed)

        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "an integer >= 1")
        if self.lr is not None and (not isinstance(self.lr, (int, float))
                                    or not math.isfinite(self.lr) or self.lr <= 0):
            bad("lr", "a finite number > 0 (or none for the dataset's recipe)")
        for name in ("momentum", "weight_decay", "gamma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, "a finite number >= 0")
        choices = {"schedule": SCHEDULES, "amp": AMP_MODES, "augment": AUGMENTS, "pad_mode": PAD_MODES,
                   "loader": LOADERS, "mixup": MIXUPS,
                   "placement": PLACEMENTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(name, ", ".join(allowed))
        if self.pad < 0:
            bad("pad", "an integer >= 0")
        for s in self.eval_splits:
            if s not in EVAL_SPLITS:
                raise ConfigError("eval_splits", self.eval_splits,
                                  f"a list of {', '.join(EVAL_SPLITS)} (not {s!r})")
        if self.milestones is not None and any(m < 1 for m in self.milestones):
            bad("milestones", "epochs >= 1")
        if self.threads is not None and self.threads < 1:
            bad("threads", "an integer >= 1")
        if self.val_size is not None and self.val_size <= 0:
            bad("val_size", "a count >= 1 or a fraction in (0, 1)")
        for name in ("labels_per_class", "unlabeled_batch_size", "iterations", "eval_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                bad(name, "an integer >= 1 (or none)")
        if self.label_seed is not None and (isinstance(self.label_seed, bool)
                                            or not isinstance(self.label_seed, int) or self.label_seed < 0):
            bad("label_seed", "an integer >= 0 (or none for seed)")
        if not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay < 1:
            bad("ema_decay", "a number in [0, 1) (0.999 in the thesis)")
        if isinstance(self.randaugment_n, bool) or not isinstance(self.randaugment_n, int) \
                or self.randaugment_n < 0:
            bad("randaugment_n", "an integer >= 0")
        if not isinstance(self.randaugment_m, (int, float)) or not 0 <= self.randaugment_m <= 30:
            bad("randaugment_m", "a level in [0, 30] (torchvision's scale)")
        if isinstance(self.mixup_alpha, bool) or not isinstance(self.mixup_alpha, (int, float)) \
                or not math.isfinite(self.mixup_alpha) or self.mixup_alpha <= 0:
            bad("mixup_alpha", "a finite number > 0")
        if self.superclass_map is not None and self.mixup not in SUPERCLASS_MIXUPS:
            raise ValueError(f"config.superclass_map is set but config.mixup = {self.mixup!r} uses no "
                             f"superclasses; it is read by mixup {' and '.join(SUPERCLASS_MIXUPS)}")
        for name in ("generations", "plateau_patience", "generation_patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "an integer >= 1")
        v = self.max_epochs_per_generation
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            bad("max_epochs_per_generation", "an integer >= 1 (or none for no cap)")
        if not isinstance(self.lr_floor, (int, float)) or not math.isfinite(self.lr_floor) \
                or self.lr_floor < 0:
            bad("lr_floor", "a finite number >= 0")
        return self

    def check_method(self, method: str) -> "TrainConfig":
        """Refuse a field set (away from its default) that ``method`` does not read."""
        defaults = TrainConfig()
        for group, (methods, names) in METHOD_GROUPS.items():
            if method in methods:
                continue
            for name in names:
                value = getattr(self, name)
                if value != getattr(defaults, name):
                    flag = "--" + name.replace("_", "-")
                    raise ValueError(
                        f"config.{name} = {value!r} ({flag}) belongs to the {group} options of "
                        f"--method {' / '.join(methods)}; --method {method} does not use it "
                        f"(leave it at its default {getattr(defaults, name)!r})")
        return self

    def for_method(self, method: str) -> "TrainConfig":
        """A copy with every group that ``method`` does not read at its defaults."""
        defaults = TrainConfig()
        reset = {name: getattr(defaults, name) for methods, names in METHOD_GROUPS.values()
                 if method not in methods for name in names}
        return replace(self, **reset)

    def resolved_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return sorted({max(1, round(self.epochs * f)) for f in (0.3, 0.6, 0.9)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "TrainConfig":
        allowed = [f.name for f in fields(cls)]
        for k in data:
            if k not in allowed:
                raise ValueError(f"{where}: unknown key {k!r}; allowed: {', '.join(allowed)}")
        try:
            return cls(**{k: coerce(cls, k, v) for k, v in data.items()}).validate()
        except ConfigError as exc:
            if where == "config" or exc.where != "config" or exc.name not in data:
                raise
            raise exc.at(where) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        from ..yamlfile import read_yaml

        path = Path(path)
        data = read_yaml(path, "config file") or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of keys to values")
        return cls.from_dict(data, where=path.name)

    def merged(self, overrides: dict, flags: set[str] = frozenset()) -> "TrainConfig":
        """A copy with ``overrides``; an error in a field of ``flags`` (the
        ones a command line gave) is told in the CLI's words."""
        try:
            return TrainConfig.from_dict({**self.to_dict(), **overrides})
        except ConfigError as exc:
            raise (exc.at("flags") if exc.name in flags else exc) from None


def field_type(cls, name: str):
    hints = typing.get_type_hints(cls)
    return hints[name]


def coerce(cls, name: str, value):
    """Turn a YAML or command-line value into the field's type (strings from the
    command line: ``"3"`` → 3, ``"60,120"`` → [60, 120], ``"none"`` → None)."""
    tp = field_type(cls, name)
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if args and typing.get_origin(tp) is not list else tp
    if isinstance(value, str) and optional and value.lower() in ("none", "null", ""):
        return None
    if value is None:
        if optional:
            return None
        raise ConfigError(name, value, f"a {getattr(base, '__name__', base)}, not null")
    origin = typing.get_origin(base)
    try:
        if origin is list:
            (item,) = typing.get_args(base)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            return [item(v) if not isinstance(v, item) else v for v in value]
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base in (int, float) and isinstance(value, bool):
            raise ValueError(value)  # YAML `true` is not a count
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        return base(value)
    except (TypeError, ValueError):
        kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
            getattr(item if origin is list else base, "__name__", ""), str(base))
        raise ConfigError(name, value, kind + (" list (A,B,..)" if origin is list else "")) from None
