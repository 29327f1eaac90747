"""Loader throughput, CIFAR-shaped data, all loaders in the same run and
timed interleaved (``interleave.py``), on the device of ``ktgfast bench
--device`` (batches delivered there).

Data: ``get_dataset("synthetic", n_train=N, image_size=32, channels=3,
num_classes=100)`` (uint8 32x32x3, N = ``KTGFAST_BENCH_LOADER_N``, default
10,000), batch 128, ``drop_last``; one sample = one full epoch (78 batches of
128 at N = 10,000).  Each loader: the batch contract checked, one warm-up
epoch, one probe epoch; then ``KTGFAST_BENCH_ROUNDS`` rounds (default 3), each
visiting every loader in a rotated order, a loader faster than the slowest
running as many epochs in a row as fit in the slowest one's epoch (at most
10), so fast rows get more samples.  Images/s counts samples delivered; a
two-view row delivers each sample as a weak and a strong view (the FixMatch
input), so its work per sample is about twice a weak row's.

Rows:
  weak    pad 4 (reflect) + random crop + horizontal flip + normalise
  strong  weak view + a second view: its own crop/flip + RandAugment(n=2, m=9)

  tensor  ktgfast TensorLoader (batched tensor ops in this process; our
          RandAugment, all 14 ops)
  torch   TorchLoader: torch DataLoader, 2 worker processes (persistent),
          torchvision v2 transforms per sample (torchvision's RandAugment)
  dali    ktgfast DaliLoader, num_threads=2 (DALI's RandAugment); a CPU
          pipeline (device_id=None) on --device cpu; skipped without
          ktgfast.data.dali or DALI

Run:  python -m pytest benchmarks/test_bench_loaders.py \\
          --benchmark-json=benchmarks/results/cpu_loaders.json
"""
from __future__ import annotations

import os

import pytest
import torch

from interleave import DEVICE, Groups, record  # benchmarks/ is on sys.path via conftest
from ktgfast.bench.timing import Budget
from ktgfast.data import Augment, TensorLoader, get_dataset
from ktgfast.data.randaugment import RandAugment
from ktgfast.data.torch_loader import TorchLoader

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "loaders",
    "title": "loader throughput, CIFAR-shaped, batch 128",
    "ktgfast": "tensor",
    "ktgfast_label": "ktgfast TensorLoader",
    "references": {"torch": "torch DataLoader (2 workers)", "dali": "DALI (2 threads)"},
    "goals": [{"group": "*weak", "ref": "torch", "min": 10.0},
              {"group": "*weak", "ref": "dali", "min": 2.0}],
}

N = int(os.environ.get("KTGFAST_BENCH_LOADER_N", 10_000))
ROUNDS = int(os.environ.get("KTGFAST_BENCH_ROUNDS", 3))
BATCH = 128
WORKERS = 2
STRONG = RandAugment(n=2, m=9)


@pytest.fixture(scope="module")
def data():
    return get_dataset("synthetic", n_train=N, n_test=8, image_size=32, channels=3,
                       num_classes=100)


KINDS = ["tensor", "torch", "dali"]
# Rounds fixed; a loader faster than the slowest is run up to 10 epochs in a row per round,
# so its median rests on more samples while every round still visits every loader.
GROUPS = Groups(Budget(rounds=ROUNDS, warmup_rounds=0, probe_calls=1, probe_seconds=0.0, max_repeats=10))


def dali_missing() -> str | None:
    """Why the DALI rows cannot run here (None: they can)."""
    try:
        from ktgfast.data import dali
    except ImportError as e:
        return f"ktgfast.data.dali does not import: {e}"
    return None if dali.dali_available() else "NVIDIA DALI is not installed"


def _make(kind: str, views: str, data):
    common = dict(augment=Augment(pad=4, pad_mode="reflect"), mean=data.mean, std=data.std,
                  device=DEVICE, seed=0, shuffle=True, drop_last=True)
    if kind == "tensor":
        return TensorLoader(data.train, BATCH, strong=STRONG if views == "strong" else None,
                            **common)
    if kind == "torch":
        return TorchLoader(data.train, BATCH, strong=STRONG if views == "strong" else None,
                           num_workers=WORKERS, **common)
    from ktgfast.data import dali

    strong = dali.RandAugmentSpec(n=STRONG.n, m=int(STRONG.m)) if views == "strong" else None
    return dali.DaliLoader(data.train, BATCH, strong=strong, num_threads=WORKERS, **common)


def prepare_group(views: str, data) -> tuple[dict, dict]:
    """Every loader of this machine for one kind of views: the batch contract
    checked and one warm-up epoch (workers, pipelines, caches) each."""
    fns, info = {}, {}
    for kind in KINDS:
        if kind == "dali" and dali_missing():
            continue
        loader = _make(kind, views, data)
        per_epoch = len(loader) * BATCH

        def one_epoch(loader=loader):
            n = 0
            for batch in loader:
                n += batch[-1].shape[0]
            return n

        first = next(iter(loader))  # check the contract before timing
        assert len(first) == (4 if views == "strong" else 3)
        assert first[0].shape == (BATCH, 3, 32, 32) and first[0].dtype == torch.float32
        assert one_epoch() == per_epoch  # and the warm-up
        fns[kind] = one_epoch
        info[kind] = dict(loader=kind, views=views, images_per_round=per_epoch, batch_size=BATCH,
                          workers_or_threads=WORKERS)
    return fns, info


@pytest.mark.parametrize("views", ["weak", "strong"])
@pytest.mark.parametrize("kind", KINDS)
def test_loader_throughput(benchmark, data, kind, views):
    if kind == "dali" and dali_missing():
        pytest.skip(dali_missing())
    timing, info = GROUPS.get(views, lambda: prepare_group(views, data))
    benchmark.group = f"loaders, {DEVICE}, 32x32x3, batch {BATCH}, {views}"
    benchmark.name = f"{kind}_{views}"
    record(benchmark, timing, info, kind)
