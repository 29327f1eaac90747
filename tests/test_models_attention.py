"""Attention taps: the Attention Transfer map of ResNets and WRNs, and the
Attention Branch Networks (map sizes per stem, f × M without bypass, the two
losses' gradients).  Registry-wide checks of the ABNs are in test_models.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ktgfast.models import ModelOutputs, attention_transfer_map, build_model
from ktgfast.models.abn import ABNResNet

# ---- the Attention Transfer map ---------------------------------------------------


@pytest.mark.parametrize("name,kw", [("resnet20", {}), ("resnet18", {}), ("wrn16_2", {}),
                                     ("resnet18", {"stem": "cifar"})])
def test_at_map_is_sum_of_squared_features(name, kw):
    model = build_model(name, 5, width=4, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_outputs(x)
        features = model.forward_features(x)
    by_hand = torch.zeros(features.shape[0], *features.shape[2:])
    for c in range(features.shape[1]):
        by_hand += features[:, c] ** 2
    assert isinstance(out, ModelOutputs) and out.aux_logits is None
    torch.testing.assert_close(out.attention, by_hand)
    assert (out.attention >= 0).all() and out.attention.amax() > 0


@pytest.mark.parametrize("name", ["resnet20", "wrn16_1", "abn_resnet20"])
def test_maps_are_float32_under_bf16_autocast(name):
    model = build_model(name, 5, width=4).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_outputs(torch.randn(2, 3, 16, 16))
        features = model.forward_features(torch.randn(2, 3, 16, 16))
    assert out.logits.dtype == torch.bfloat16  # autocast did lower the network
    assert out.attention.dtype == torch.float32
    assert (out.attention >= 0).all()
    if not name.startswith("abn_"):
        assert features.dtype == torch.bfloat16
        q = attention_transfer_map(features)
        assert q.dtype == torch.float32
        torch.testing.assert_close(q, features.float().pow(2).sum(1), rtol=0, atol=0)


def test_at_map_squares_in_float32():
    """In half precision the squares would overflow (fp16: 257² > 65504) or
    round (bf16: (1 + 2⁻⁷)² needs 15 bits); float32 keeps both exact."""
    fp16 = torch.full((1, 3, 1, 1), 257.0, dtype=torch.float16)
    assert fp16.square().isinf().all()  # what computing in fp16 would give
    assert attention_transfer_map(fp16).item() == 3 * 257**2
    bf16 = torch.full((1, 3, 1, 1), 1 + 2**-7, dtype=torch.bfloat16)
    assert (bf16.square().float() != (1 + 2**-7) ** 2).all()  # bf16 rounds it
    assert attention_transfer_map(bf16).item() == 3 * (1 + 2**-7) ** 2
    assert attention_transfer_map(fp16.double()).dtype == torch.float64


def test_at_map_other_p_and_errors():
    a = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(attention_transfer_map(a, p=1), a.abs().sum(1))
    torch.testing.assert_close(attention_transfer_map(a, p=3), a.abs().pow(3).sum(1))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(4, 3, 3\)"):
        attention_transfer_map(a[0])
    for p in (0, -1, True, "2"):
        with pytest.raises(ValueError, match=f"p must be.*{p!r}"):
            attention_transfer_map(a, p=p)


# ---- Attention Branch Networks ----------------------------------------------------

ABN_SHAPES = [  # name, stem, input side, map side (see the table in ktgfast.models.abn)
    ("abn_resnet20", "cifar", 32, 16),
    ("abn_resnet20", "tiny", 64, 32),
    ("abn_resnet20", "large", 224, 16),
    ("abn_resnet18", "imagenet", 224, 14),
    ("abn_resnet18", "large", 224, 8),
    ("abn_resnet18", "cifar", 32, 8),
    ("abn_resnet18", "tiny", 64, 16),
]


@pytest.mark.parametrize("name,stem,size,side", ABN_SHAPES)
def test_abn_output_shapes(name, stem, size, side):
    model = build_model(name, 7, width=2, stem=stem).eval()
    with torch.no_grad():
        logits, attention, aux_logits = model.forward_outputs(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7) and aux_logits.shape == (2, 7)
    assert attention.shape == (2, side, side) and attention.dtype == torch.float32
    # a sigmoid (it saturates to 0 or 1 in float32 on untrained BN statistics)
    assert ((attention >= 0) & (attention <= 1)).all() and attention.std() > 0
    assert model.crop_sizes == (3, 7, 11)


def small_abn(name: str = "abn_resnet20") -> ABNResNet:
    return build_model(name, 5, width=4)


class Taps:
    """Forward hooks: record the perception branch's input; optionally replace
    the attention branch's map by a constant."""

    def __init__(self, model: ABNResNet, map_value: float | None = None):
        self.perception_input = None
        self.features = None
        model.extractor.register_forward_hook(self._keep_features)
        model.perception.register_forward_pre_hook(self._keep_input)
        if map_value is not None:
            model.attention_branch.register_forward_hook(
                lambda _m, _i, out: (torch.full_like(out[0], map_value), out[1]))

    def _keep_features(self, _module, _inputs, output):
        self.features = output.detach().clone()

    def _keep_input(self, _module, inputs):
        self.perception_input = inputs[0].detach().clone()


@pytest.mark.parametrize("name", ["abn_resnet20", "abn_resnet18"])
def test_abn_perception_reads_features_times_map_without_bypass(name):
    x = torch.randn(2, 3, 32, 32)

    model = small_abn(name).eval()
    taps = Taps(model, map_value=0.0)
    with torch.no_grad():
        model(x)
    assert taps.features.abs().amax() > 0
    assert torch.count_nonzero(taps.perception_input) == 0  # with a bypass: = features

    model = small_abn(name).eval()
    taps = Taps(model, map_value=1.0)
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(taps.perception_input, taps.features, rtol=0, atol=0)

    model = small_abn(name).eval()  # the real map, composed by hand
    taps = Taps(model)
    with torch.no_grad():
        out = model.forward_outputs(x)
        attention, aux_logits = model.attention_branch(taps.features)
    assert attention.shape == (2, 1, *taps.features.shape[2:])
    torch.testing.assert_close(taps.perception_input, taps.features * attention)
    torch.testing.assert_close(out.attention, attention[:, 0])
    torch.testing.assert_close(out.aux_logits, aux_logits)


@pytest.mark.parametrize("train", [False, True])
def test_abn_forward_is_perception_logits(train):
    model = small_abn().train(train)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_outputs(x)
        logits = model(x)
        features = model.forward_features(x)
        head = model.forward_head(features)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(head, logits, rtol=0, atol=0)
    assert features.shape == (4, model.num_features, 8, 8)
    assert not torch.allclose(out.aux_logits, out.logits)  # two different heads


def grads(model: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def nonzero(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.abs().sum() > 0)


def test_abn_gradients_reach_attention_branch_by_both_losses():
    model = small_abn().train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    branch = [n for n, _ in model.named_parameters() if n.startswith("attention_branch.blocks.")]
    assert branch

    # perception loss: through f × M into the map head and the branch's blocks
    g = grads(model, F.cross_entropy(model.forward_outputs(x).logits, y))
    assert all(nonzero(g[n]) for n in branch)
    assert nonzero(g["attention_branch.to_map.weight"])
    assert g["attention_branch.classifier.weight"] is None  # aux head unused
    assert nonzero(g["stem.0.weight"]) and nonzero(g["fc.weight"])

    # the branch's own cross-entropy: not into the map head nor the perception
    g = grads(model, F.cross_entropy(model.forward_outputs(x).aux_logits, y))
    assert all(nonzero(g[n]) for n in branch)
    assert nonzero(g["attention_branch.classifier.weight"])
    assert nonzero(g["stem.0.weight"])
    assert g["attention_branch.to_map.weight"] is None
    assert all(g[n] is None for n in g if n.startswith(("perception.", "fc.")))

    # an attention edge's loss on the map: into the map head
    g = grads(model, model.forward_outputs(x).attention.pow(2).sum())
    assert nonzero(g["attention_branch.to_map.weight"]) and all(nonzero(g[n]) for n in branch)


def test_abn_needs_two_stages():
    with pytest.raises(ValueError, match=r"ABN needs >= 2 stages.*\(16,\)"):
        ABNResNet((16,), (3,), 10)
