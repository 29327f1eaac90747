"""Training-step throughput: a 3-node ResNet-20 DML graph (all Through),
batch 64, CIFAR-100-shaped data, against a trainer in the style of the public
KTG code, measured in the same run: all six trainers are built side by side
and their steps timed interleaved (``interleave.py``), one warm-up round
(compilation) first, then ``KTGFAST_BENCH_ROUNDS`` (default 5) rounds of
``KTGFAST_BENCH_STEPS`` (default 2) steps each.

Rows (group "train-step"):
  bare_models_fp32   the same three models with no knowledge transfer: forward,
                     cross-entropy each, one backward of the sum, SGD steps -- the
                     floor, so ktgfast_fp32 / this is the KTG machinery's overhead
  public_style_fp32  per-edge F.kl_div / cross_entropy with an ``.item()`` per
                     edge, ``backward(retain_graph=True)`` per node, per-node steps
  ktgfast_fp32       Trainer.train_step: one forward per node, one fused edge
                     call, one backward of the sum (the headline row)
  ktgfast_bf16       + bf16 autocast
  ktgfast_channels_last
  ktgfast_compile    + torch.compile of every model

Run:  python -m pytest benchmarks/test_bench_train_step.py \
          --benchmark-json=benchmarks/results/cpu_train_step.json
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from interleave import DEVICE, Groups, record  # benchmarks/ is on sys.path via conftest
from ktgfast.bench.timing import Budget
from ktgfast.data import get_dataset
from ktgfast.graph import get_preset
from ktgfast.models import build_model
from ktgfast.train import TrainConfig, Trainer

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "train_step",
    "title": "train step, 3x ResNet-20 DML, batch 64",
    "ktgfast": "ktgfast_fp32",
    "ktgfast_label": "ktgfast, fp32 (headline)",
    "references": {"public_style_fp32": "public-style trainer, fp32",
                   "bare_models_fp32": "bare models (CE only), fp32"},
    "variants": {"ktgfast_bf16": "ktgfast, bf16 autocast", "ktgfast_channels_last": "ktgfast, channels_last",
                 "ktgfast_compile": "ktgfast, torch.compile"},
    "bf16": ["ktgfast_bf16"],
    # bare / ktgfast >= 0.98: the KTG step costs at most ~1.02x the bare models'
    "goals": [{"group": "*", "ref": "public_style_fp32", "min": 1.3},
              {"group": "*", "ref": "bare_models_fp32", "min": 0.98}],
}

BATCH = 64
NODES = 3
CLASSES = 100
STEPS = int(os.environ.get("KTGFAST_BENCH_STEPS", 2))  # steps per timed round
ROUNDS = int(os.environ.get("KTGFAST_BENCH_ROUNDS", 5))


@pytest.fixture(scope="module")
def data():
    return get_dataset("synthetic", n_train=BATCH * 4, n_test=BATCH, num_classes=CLASSES,
                       channels=3, image_size=32)


@pytest.fixture(scope="module")
def batch(data):
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, CLASSES, (BATCH,))
    return x.to(DEVICE), y.to(DEVICE)


def make_trainer(data, tmp_path, **cfg):
    graph = get_preset("dml", k=NODES, model="resnet20", peer="sum")
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, out=str(tmp_path), tensorboard=False,
                         eval_splits=[], augment="none", device=DEVICE, **cfg)
    return Trainer(graph, data, config)


class PublicStyleTrainer:
    """The loop of public KTG code: losses edge by edge, host reads for logging
    on every edge, and one ``backward(retain_graph=True)`` per node."""

    def __init__(self, models, lr=0.01):
        self.models = models
        self.opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                     weight_decay=5e-4) for m in models]
        self.log = {}

    def step(self, x, y):
        outs = [m(x) for m in self.models]
        for t, out in enumerate(outs):
            loss = F.cross_entropy(out, y)
            self.log[("label", t)] = loss.item()
            for s, src in enumerate(outs):
                if s == t:
                    continue
                kl = F.kl_div(F.log_softmax(out, dim=1), F.softmax(src.detach(), dim=1),
                              reduction="batchmean")
                self.log[(s, t)] = kl.item()
                if kl.item() != 0:  # the gate check of the public code
                    loss = loss + kl
            self.opts[t].zero_grad()
            loss.backward(retain_graph=True)
        for opt in self.opts:
            opt.step()


class BareModels:
    """The floor: the graph's models trained on the labels alone, in the
    plainest PyTorch (one backward of the summed cross-entropies)."""

    def __init__(self, models, lr=0.01):
        self.models = models
        self.opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                     weight_decay=5e-4) for m in models]

    def step(self, x, y):
        for opt in self.opts:
            opt.zero_grad()
        sum(F.cross_entropy(m(x), y) for m in self.models).backward()
        for opt in self.opts:
            opt.step()


VARIANTS = {"fp32": {}, "bf16": {"amp": "bf16"}, "channels_last": {"channels_last": True},
            "compile": {"compile": True}}
IMPLS = ["bare_models_fp32", "public_style_fp32", *(f"ktgfast_{v}" for v in VARIANTS)]
GROUPS = Groups(Budget(rounds=ROUNDS, warmup_rounds=1))  # the warm-up round compiles


def steps(step, x, y):
    def go():
        for _ in range(STEPS):
            step(x, y)
    return go


def prepare_group(data, batch, out_dir) -> tuple[dict, dict]:
    """The public-style trainer and every ktgfast variant, built side by side
    so that their steps can be timed interleaved."""
    x, y = batch
    torch.manual_seed(0)
    models = [build_model("resnet20", CLASSES).to(DEVICE) for _ in range(NODES)]
    for m in models:
        m.train()
    torch.manual_seed(0)
    bare = [build_model("resnet20", CLASSES).to(DEVICE).train() for _ in range(NODES)]
    fns = {"public_style_fp32": steps(PublicStyleTrainer(models).step, x, y),
           "bare_models_fp32": steps(BareModels(bare).step, x, y)}
    for variant, cfg in VARIANTS.items():
        trainer = make_trainer(data, out_dir / variant, **cfg)
        for m in trainer.models:
            m.train()
        xv = x.contiguous(memory_format=torch.channels_last) if variant == "channels_last" else x
        fns[f"ktgfast_{variant}"] = steps(trainer.train_step, xv, y)
    return fns, {impl: {"images_per_round": BATCH * STEPS, "steps_per_round": STEPS} for impl in fns}


@pytest.mark.parametrize("impl", IMPLS)
def test_train_step(benchmark, data, batch, tmp_path_factory, impl):
    timing, info = GROUPS.get("train-step", lambda: prepare_group(data, batch, tmp_path_factory.mktemp("runs")))
    benchmark.group = f"train-step (3x ResNet-20 DML, batch {BATCH}, {DEVICE})"
    benchmark.name = impl
    record(benchmark, timing, info, impl)
