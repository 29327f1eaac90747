"""Loader throughput on CPU, CIFAR-shaped data, all loaders in the same run.

Data: ``get_dataset("synthetic", n_train=N, image_size=32, channels=3,
num_classes=100)`` (uint8 32x32x3, N = ``KTGFAST_BENCH_LOADER_N``, default
10,000), batch 128, ``drop_last``; one timed round = one full epoch (78
batches of 128 at N = 10,000) after one warm-up epoch;
``KTGFAST_BENCH_ROUNDS`` rounds (default 3), more for fast rows (>= ~1 s in
all, at most 50).  Images/s counts
samples delivered; a two-view row delivers each sample as a weak and a strong
view (the FixMatch input), so its work per sample is about twice a weak row's.

Rows:
  weak    pad 4 (reflect) + random crop + horizontal flip + normalise
  strong  weak view + a second view: its own crop/flip + RandAugment(n=2, m=9)

  tensor  ktgfast TensorLoader (batched tensor ops in this process; our
          RandAugment, all 14 ops)
  torch   TorchLoader: torch DataLoader, 2 worker processes (persistent),
          torchvision v2 transforms per sample (torchvision's RandAugment)
  dali    ktgfast DaliLoader, CPU pipeline (device_id=None), num_threads=2
          (DALI's RandAugment); skipped without ktgfast.data.dali or DALI

Run:  python -m pytest benchmarks/test_bench_loaders.py \\
          --benchmark-json=benchmarks/results/cpu_loaders.json
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from ktgfast.data import Augment, TensorLoader, get_dataset
from ktgfast.data.randaugment import RandAugment
from ktgfast.data.torch_loader import TorchLoader

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "loaders",
    "title": "loader throughput, CIFAR-shaped, batch 128 (CPU)",
    "ktgfast": "tensor",
    "ktgfast_label": "ktgfast TensorLoader",
    "references": {"torch": "torch DataLoader (2 workers)", "dali": "DALI CPU"},
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


def _make(kind: str, views: str, data):
    common = dict(augment=Augment(pad=4, pad_mode="reflect"), mean=data.mean, std=data.std,
                  device="cpu", seed=0, shuffle=True, drop_last=True)
    if kind == "tensor":
        return TensorLoader(data.train, BATCH, strong=STRONG if views == "strong" else None,
                            **common)
    if kind == "torch":
        return TorchLoader(data.train, BATCH, strong=STRONG if views == "strong" else None,
                           num_workers=WORKERS, **common)
    dali = pytest.importorskip("ktgfast.data.dali")
    if not dali.dali_available():
        pytest.skip("NVIDIA DALI is not installed")
    strong = dali.RandAugmentSpec(n=STRONG.n, m=int(STRONG.m)) if views == "strong" else None
    return dali.DaliLoader(data.train, BATCH, strong=strong, num_threads=WORKERS, **common)


@pytest.mark.parametrize("views", ["weak", "strong"])
@pytest.mark.parametrize("kind", ["tensor", "torch", "dali"])
def test_loader_throughput(benchmark, data, kind, views):
    loader = _make(kind, views, data)
    per_epoch = len(loader) * BATCH

    def one_epoch():
        n = 0
        for batch in loader:
            n += batch[-1].shape[0]
        return n

    first = next(iter(loader))  # check the contract before timing
    assert len(first) == (4 if views == "strong" else 3)
    assert first[0].shape == (BATCH, 3, 32, 32) and first[0].dtype == torch.float32
    t0 = time.perf_counter()
    assert one_epoch() == per_epoch  # warm-up: workers, pipelines, caches
    # short epochs get more rounds (>= ~1 s in all), so the median is stable
    rounds = max(ROUNDS, min(50, int(1.0 / (time.perf_counter() - t0))))
    benchmark.group = f"loaders, CPU, 32x32x3, batch {BATCH}, {views}"
    benchmark.name = f"{kind}_{views}"
    benchmark.extra_info.update(impl=kind, loader=kind, views=views, images_per_round=per_epoch,
                                batch_size=BATCH, workers_or_threads=WORKERS)
    benchmark.pedantic(one_epoch, rounds=rounds, iterations=1)
    benchmark.extra_info["images_per_s"] = per_epoch / benchmark.stats.stats.median
