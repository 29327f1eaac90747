"""The superclass-mixup paper (DML with superclass-aware mixup, §5, table 1):
two ResNet32s trained by Deep Mutual Learning (Zhang et al. 2018) on CIFAR-100,
without mixup, with mixup (Zhang et al. 2018, α = 1) and with the two
superclass-aware policies (§4: selection 0.5 / {0.9, 0.1}; Beta(8, 8) within a
superclass, Beta(0.2, 0.2) across), the superclasses being CIFAR-100's 20
coarse classes.  The paper states no training recipe; we take the thesis's
CIFAR recipe (ch. 3, §3.3.1), the same laboratory's.
"""
from __future__ import annotations

from ..recipe import Paper, Recipe, Row
from .ktg_cifar100 import TRAIN

DML = {"k": 2, "models": ["resnet32", "resnet32"], "peer": "sum", "rampup": "none"}
N0, N1 = "test_acc:node0", "test_acc:node1"


def _row(name: str, label: str, mixup: str, m1: float, m2: float) -> Row:
    return Row(name, label, "dml", graph_args=DML, config={"mixup": mixup},
               paper={N0: Paper(m1), N1: Paper(m2)})


MIXUP = Recipe(
    name="mixup-dml-cifar100",
    paper="the superclass-mixup paper, §5, table 1",
    title="superclass-aware mixup in DML (ResNet32 x 2), model 1 / model 2",
    dataset="cifar100", models="ResNet32 x 2 (DML)",
    split="CIFAR-100 train 50,000 / test 10,000; superclasses = the 20 coarse labels",
    train=dict(TRAIN, mixup_alpha=1.0), seeds=(0, 1, 2),
    rows=(
        _row("none", "no mixup", "none", 71.51, 71.46),
        _row("mixup", "mixup (α = 1.0)", "beta", 71.37, 71.08),
        _row("superclass-select", "ours, selection", "superclass_select", 72.23, 71.93),
        _row("superclass-beta", "ours, Beta distribution", "superclass_beta", 73.28, 73.01),
    ),
    differs=(
        "the paper gives no epochs, lr, batch, schedule or weight decay: the thesis's CIFAR recipe "
        "(200 epochs, lr 0.1, batch 64, x 0.1 at 60/120/180, Nesterov, wd 5e-4 ours) is used",
        "the paper reports one number per model (no seeds stated); we run seeds 0-2",
        "λ is drawn per sample under every policy (docs/mixup.md); Zhang et al. draw one per batch",
    ),
)

RECIPES = (MIXUP,)
