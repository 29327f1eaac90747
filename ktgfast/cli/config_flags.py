"""The TrainConfig flags of ``train`` and ``distill``: one table of groups and
help texts (timm-style groups), and the config a command line resolves to
(defaults < --config YAML < flags; on --resume the run's own config.yaml is the
base)."""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import yaml

from ..train import config as C

_BOOL = "true|false"


def _choices(values) -> str:
    return "|".join(values)


def _help_table() -> dict[str, tuple[str, str]]:
    """field -> (metavar, help without the default)."""
    from ..data.recipes import lr_help

    return {
        # optimisation
        "epochs": ("N", "epochs to train (on --resume: the run's, unless given)"),
        "batch_size": ("N", "images per step and rank (under torchrun the global batch is "
                            "N x WORLD_SIZE; the lr is not rescaled)"),
        "lr": ("LR", f"initial learning rate; none: the dataset's recipe ({lr_help()}; "
                     "other datasets 0.1)"),
        "momentum": ("M", "SGD momentum"),
        "nesterov": (_BOOL, "Nesterov momentum"),
        "weight_decay": ("WD", "L2 weight decay"),
        "schedule": (_choices(C.SCHEDULES), "lr schedule per epoch; auto: the dataset's recipe "
                                           "(cosine; CIFAR: multistep as in the thesis)"),
        "milestones": ("E1,E2,..", "multistep epochs where lr *= gamma; none: 30/60/90 %% of --epochs"),
        "gamma": ("G", "multistep factor (and the plateau factor of --method self-distill)"),
        # data
        "data_root": ("DIR", "dataset folder; none: $KTGFAST_DATA or ~/.cache/ktgfast/data "
                             "(mnist5k is bundled and needs none)"),
        "download": (_BOOL, "download CIFAR into --data-root when missing"),
        "val_size": ("N|F", "validation carved from train: a count or a fraction; none: the "
                            "dataset's own validation split (mnist5k has one, CIFAR has none)"),
        "augment": (_choices(C.AUGMENTS), "training augmentation; auto: crop+flip for natural "
                                         "images, crop for digits"),
        "pad": ("P", "padding of the random crop"),
        "pad_mode": (_choices(C.PAD_MODES), "padding of the random crop"),
        "eval_splits": ("val,test", "splits evaluated after every epoch"),
        "eval_batch_size": ("N", "images per evaluation batch"),
        "loader": (_choices(C.LOADERS), "data loader; auto: tensor for in-memory data, DALI or "
                                       "torch for image folders"),
        # semi-supervised
        "labels_per_class": ("N", "labelled images per class; none: all of train"),
        "label_seed": ("S", "seed of the labelled/unlabelled split; none: --seed"),
        "unlabeled_batch_size": ("N", "unlabelled images per step; none: 7 x --batch-size "
                                      "(FixMatch's mu = 7)"),
        "iterations": ("N", "total steps; none: --epochs x --eval-every"),
        "eval_every": ("N", "steps per evaluation period; none: one pass over the unlabelled set"),
        "ema_decay": ("A", "decay of EMA (mean-teacher) nodes, in [0, 1)"),
        "randaugment_n": ("N", "strong view: RandAugment ops per image"),
        "randaugment_m": ("M", "strong view: RandAugment level on the 0..30 scale"),
        "randaugment_random_magnitude": (_BOOL, "level uniform in [0, M] per op (FixMatch style)"),
        # mixup
        "mixup": (_choices(C.MIXUPS), "mixup policy (docs/mixup.md)"),
        "mixup_alpha": ("A", "Beta(A, A) of the mixing weight"),
        "superclass_map": ("JSON", "fine class -> superclass map; none: the dataset's own"),
        # generations
        "generations": ("N", "generations of self-distillation / BAN"),
        "plateau_patience": ("E", "epochs without a val gain before reset-to-best and lr *= gamma"),
        "generation_patience": ("E", "epochs without a val gain before the next generation"),
        "lr_floor": ("LR", "the plateau decay never goes below it"),
        "max_epochs_per_generation": ("E", "safety cap per generation; none: only the patiences"),
        # speed and devices
        "device": ("auto|cpu|cuda|cuda:N", "device; auto: cuda when available; under torchrun "
                                          "cuda means cuda:LOCAL_RANK"),
        "amp": (_choices(C.AMP_MODES), "autocast precision (bf16 is slow on CPUs without native "
                                      "bf16: measure with ktgfast bench)"),
        "channels_last": (_BOOL, "channels-last memory format"),
        "compile": (_BOOL, "torch.compile the models"),
        "threads": ("N", "torch CPU threads; none: torch's default"),
        "sync_bn": (_BOOL, "under torchrun: SyncBatchNorm across ranks (CUDA only)"),
        "placement": (_choices(C.PLACEMENTS), "under torchrun: replicate = the whole graph on every "
                                             "rank (data parallel); spread = each rank its own nodes"),
        # run
        "seed": ("S", "seed of models, data order and augmentation"),
        "out": ("DIR", "run folder; none: runs/GRAPH-DATA-TIME"),
        "log_every": ("N", "steps between host reads (NaN check, progress bar)"),
        "progress_bar": (_BOOL, "per-epoch progress bar; none: when stderr is a terminal"),
        "tensorboard": (_BOOL, "TensorBoard events in RUN/tb (needs the tensorboard package)"),
        "checkpoint": (_BOOL, "write RUN/checkpoint.pt every epoch (needed by --resume)"),
        "verbose": (_BOOL, "print the graph, one line per epoch and a summary"),
        "pretrain_cache": ("DIR", "cache of pretrained frozen teachers; none: $KTGFAST_CACHE or "
                                  "~/.cache/ktgfast"),
    }


# (title, the methods it applies to (None: all), fields).  The method-only
# groups follow TrainConfig's METHOD_GROUPS so the two cannot disagree.
def flag_groups() -> list[tuple[str, tuple[str, ...] | None, tuple[str, ...]]]:
    g = C.METHOD_GROUPS
    return [
        ("optimisation", None, ("epochs", "batch_size", "lr", "momentum", "nesterov",
                                "weight_decay", "schedule", "milestones", "gamma")),
        ("data", None, ("data_root", "download", "val_size", "augment", "pad", "pad_mode",
                        "eval_splits", "eval_batch_size", "loader")),
        ("semi-supervised", *g["semi-supervised"]),
        ("mixup", *g["mixup"]),
        ("generations", *g["generations"]),
        ("speed and devices", None, ("device", "amp", "channels_last", "compile", "threads",
                                     "sync_bn", *g["node-parallel"][1])),
        ("run", None, ("seed", "out", "log_every", "progress_bar", "tensorboard", "checkpoint",
                       "verbose", "pretrain_cache")),
    ]


def _default_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def add_config_flags(p: argparse.ArgumentParser, method: str | None = None) -> None:
    """Every TrainConfig field as a flag, in groups.  With ``method`` known,
    the groups of other methods still parse (TrainConfig.check_method refuses
    them with a clear line) but are left out of --help."""
    run = p.add_argument_group("config files and resuming")
    run.add_argument("--config", metavar="YAML", help="YAML file of the config keys below (flags win)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out; a field not given keeps the run's value "
                          "(a torchrun restart, --max-restarts, resumes by itself)")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an --out that holds a run: deletes only its ktgfast "
                          "run files")
    defaults, table = C.TrainConfig(), _help_table()
    readers = {name: methods for methods, names in C.METHOD_GROUPS.values() for name in names}
    hidden = []
    for title, methods, names in flag_groups():
        if method is not None and methods is not None and method not in methods:
            hidden.append(f"{title} (--method {' / '.join(methods)})")
        group = p.add_argument_group(title if methods is None else
                                     f"{title} (--method {', '.join(methods)})")
        for name in names:
            metavar, text = table[name]
            default = getattr(defaults, name)
            shown = method is None or method in readers.get(name, (method,))
            kw = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
            group.add_argument("--" + name.replace("_", "-"), dest=f"cfg_{name}", default=None,
                               metavar=metavar,
                               help=(f"{text} (default: {_default_text(default)})" if shown
                                     else argparse.SUPPRESS), **kw)
    if hidden:
        p.epilog = ((p.epilog + "\n") if p.epilog else "") + \
            f"Hidden for --method {method}: {'; '.join(hidden)}."


def config_from_args(args: argparse.Namespace):
    """TrainConfig from --config YAML, overridden by the per-field flags.  On
    --resume the base is the run's own config (its config.yaml), so a field
    not given again -- --epochs included -- keeps the run's value."""
    from ..train import TrainConfig

    overrides = {f.name: getattr(args, f"cfg_{f.name}") for f in fields(TrainConfig)
                 if getattr(args, f"cfg_{f.name}") is not None}
    saved = Path(args.cfg_out) / "config.yaml" if getattr(args, "resume", False) and args.cfg_out else None
    if saved is not None and saved.exists():
        base = (yaml.safe_load(saved.read_text()) or {}).get("config", {})
        known = {f.name for f in fields(TrainConfig)}
        config = TrainConfig.from_dict({k: v for k, v in base.items() if k in known},
                                       where=str(saved))
        if args.config:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
            TrainConfig.from_yaml(args.config)  # its own checks and messages
            config = config.merged(data)
        return config.merged(overrides, flags=set(overrides))
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    return config.merged(overrides, flags=set(overrides))
