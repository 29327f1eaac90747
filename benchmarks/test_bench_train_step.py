"""Training-step throughput: a 3-node ResNet-20 DML graph (all Through), CPU,
batch 64, CIFAR-100-shaped data, against a trainer in the style of the public
KTG code, measured in the same run.

Rows (group "train-step"):
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

from ktgfast.data import get_dataset
from ktgfast.graph import get_preset
from ktgfast.models import build_model
from ktgfast.train import TrainConfig, Trainer

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "train_step",
    "title": "train step, 3x ResNet-20 DML, batch 64 (CPU)",
    "ktgfast": "ktgfast_fp32",
    "ktgfast_label": "ktgfast, fp32 (headline)",
    "references": {"public_style_fp32": "public-style trainer, fp32"},
    "variants": {"ktgfast_bf16": "ktgfast, bf16 autocast", "ktgfast_channels_last": "ktgfast, channels_last",
                 "ktgfast_compile": "ktgfast, torch.compile"},
    "bf16": ["ktgfast_bf16"],
    "goals": [{"group": "*", "ref": "public_style_fp32", "min": 1.3}],
}

BATCH = 64
NODES = 3
CLASSES = 100
STEPS = int(os.environ.get("KTGFAST_BENCH_STEPS", 2))  # steps per timed round
ROUNDS = int(os.environ.get("KTGFAST_BENCH_ROUNDS", 3))


@pytest.fixture(scope="module")
def data():
    return get_dataset("synthetic", n_train=BATCH * 4, n_test=BATCH, num_classes=CLASSES,
                       channels=3, image_size=32)


@pytest.fixture(scope="module")
def batch(data):
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, CLASSES, (BATCH,))
    return x, y


def make_trainer(data, tmp_path, **cfg):
    graph = get_preset("dml", k=NODES, model="resnet20", peer="sum")
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, out=str(tmp_path), tensorboard=False,
                         eval_splits=[], augment="none", **cfg)
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


def _run(benchmark, step, x, y, impl, rows=BATCH * STEPS):
    def go():
        for _ in range(STEPS):
            step(x, y)

    go()  # warm-up (and compilation)
    benchmark.group = "train-step (3x ResNet-20 DML, batch 64, CPU)"
    benchmark.extra_info.update(impl=impl, images_per_round=rows)
    benchmark.pedantic(go, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["images_per_s"] = rows / benchmark.stats.stats.median


def test_public_style_fp32(benchmark, batch):
    torch.manual_seed(0)
    models = [build_model("resnet20", CLASSES) for _ in range(NODES)]
    for m in models:
        m.train()
    trainer = PublicStyleTrainer(models)
    _run(benchmark, trainer.step, *batch, impl="public_style_fp32")


@pytest.mark.parametrize("variant", ["fp32", "bf16", "channels_last", "compile"])
def test_ktgfast(benchmark, data, batch, tmp_path, variant):
    cfg = {"fp32": {}, "bf16": {"amp": "bf16"}, "channels_last": {"channels_last": True},
           "compile": {"compile": True}}[variant]
    trainer = make_trainer(data, tmp_path, **cfg)
    for m in trainer.models:
        m.train()
    x, y = batch
    if variant == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    benchmark.name = f"ktgfast_{variant}"
    _run(benchmark, trainer.train_step, x, y, impl=f"ktgfast_{variant}")
