"""Takagi & Hattori 2019 (IEICE technical report NC2018-83, §5, fig. 1):
self-distillation with Born-Again generations vs BAN (Furlanello et al. 2018)
on CIFAR-100.

Recipe of §5.1: ResNet-20; 5,000 of the 50,000 training images held out at
random for validation; flip p = 0.5 and shifts of 0-4 px; lr 0.1, floor 0.001;
20 epochs without a validation gain: back to the generation's best weights and
lr x 0.1; 40 epochs without a gain: next generation; test accuracy and BAN's
next teacher from the best-validation weights; batch 100, momentum 0.9, weight
decay 1e-4; 10 trials.  The paper plots the test accuracy per generation
(fig. 1) and prints no numbers: self-distillation is significantly above BAN at
every generation but between 5 and 6 (t-test), and its generation 2 is above
BAN's generations 3-7.
"""
from __future__ import annotations

from ..recipe import Recipe, Row

GENERATIONS = 7  # fig. 1's horizontal axis
TRAIN = dict(epochs=5000, lr=0.1, batch_size=100, momentum=0.9, nesterov=False, weight_decay=1e-4,
             augment="crop_flip", pad=4, pad_mode="zero", val_size=5000, eval_splits=["val", "test"],
             generations=GENERATIONS, plateau_patience=20, generation_patience=40, lr_floor=0.001,
             gamma=0.1)
NO_NUMBER = "fig. 1 plots it; no value is printed"

SELF_DISTILL = Recipe(
    name="self-distill-cifar100",
    paper="Takagi & Hattori 2019 (NC2018-83), §5, fig. 1",
    title="self-distillation vs BAN, test accuracy per generation (ResNet-20, CIFAR-100)",
    dataset="cifar100", models="ResNet-20",
    split="CIFAR-100 train 45,000 / validation 5,000 (random, stratified) / test 10,000",
    train=TRAIN, seeds=tuple(range(10)),
    rows=(
        Row("self-distill", "BAN + self-distillation (eq. 2)", "vanilla", method="self-distill",
            graph_args={"model": "resnet20"}, note=NO_NUMBER),
        Row("ban", "BAN", "vanilla", method="ban", graph_args={"model": "resnet20"}, note=NO_NUMBER),
    ),
    differs=(
        "the paper prints no numbers (fig. 1 only): the runner reports ours per generation and no "
        "paper value; compare the per-generation means with the figure",
        "the 5,000 validation images are a stratified draw (seed 0), the paper's is uniform",
        "epochs = 5000 is only a cap on the whole run; the patience rules end each generation",
    ),
)

RECIPES = (SELF_DISTILL,)
