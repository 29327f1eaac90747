"""The model registry: names, options and their errors, the features/head split,
forward_outputs, shapes per stem, published parameter counts, init,
channels_last and compile.  (ABN and attention maps in detail:
test_models_attention.py.)"""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from ktgfast.models import (
    MODEL_OPTIONS,
    build_model,
    list_models,
    model_options,
    register_model,
)

EXPECTED = ["abn_resnet110", "abn_resnet18", "abn_resnet20", "abn_resnet32", "abn_resnet56",
            "cnn_small", "mlp", "resnet110", "resnet18", "resnet20", "resnet32", "resnet56",
            "wrn28_10", "wrn28_2", "wrn28_6"]
SIZE = 16  # input side for every model unless a test says otherwise (CPU time)


def small(name: str, num_classes: int = 5, in_channels: int = 3, size: int = SIZE,
          **kw) -> nn.Module:
    """``name`` at a test-friendly size (width 4, 16 hidden units) for
    ``size`` px inputs."""
    opts = model_options(name)
    tiny = {"width": 4, "hidden": 16, "image_size": size}
    return build_model(name, num_classes, in_channels,
                       **{**{k: v for k, v in tiny.items() if k in opts}, **kw})


def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(names)
    assert set(EXPECTED) <= set(names)
    assert "wrn{depth}_{widen}" not in names  # templates are not buildable names
    assert set(names) | {"wrn{depth}_{widen}"} == set(MODEL_OPTIONS)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_logits_and_split(name, in_channels):
    model = small(name, 5, in_channels).eval()
    x = torch.randn(2, in_channels, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        split = model.forward_head(features)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    assert features.dim() == 4 and features.shape[:2] == (2, model.num_features)
    torch.testing.assert_close(logits, split, rtol=0, atol=0)


@pytest.mark.parametrize("name", list_models())
def test_forward_outputs(name):
    """One pass gives forward's logits, an (N, H, W) float32 map, and auxiliary
    logits exactly for the ABNs."""
    model = small(name, 5).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model.forward_outputs(x)
        logits = model(x)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)
    assert out.attention.dim() == 3 and out.attention.shape[0] == 2
    assert out.attention.dtype == torch.float32
    assert (out.attention >= 0).all()
    if name.startswith("abn_"):
        assert out.aux_logits.shape == (2, 5)
        assert model.crop_sizes == (3, 7, 11)
    else:
        assert out.aux_logits is None
        assert model.crop_sizes == (3, 5, 7)


@pytest.mark.parametrize("name,kw,size,hw,channels", [
    ("resnet20", {}, 32, 8, 16),                       # stages 32 -> 32, 16, 8
    ("resnet20", {"stem": "tiny"}, 64, 16, 16),
    ("resnet20", {"stem": "large"}, 224, 8, 16),       # 224 -> pool 7/7 -> 32 -> 8
    ("wrn16_2", {}, 32, 8, 32),                        # 4w * k = 4 * 4 * 2
    ("wrn16_1", {"stem": "large"}, 224, 8, 16),
    ("resnet18", {}, 224, 7, 32),                      # imagenet: /32
    ("resnet18", {"stem": "large"}, 224, 4, 32),       # 224 -> pool 7/7 -> 32 -> /8 -> 4
    ("resnet18", {"stem": "cifar"}, 32, 4, 32),
    ("resnet18", {"stem": "tiny"}, 64, 8, 32),
    ("cnn_small", {}, 28, 7, 32),
    ("cnn_small", {}, 32, 8, 32),
    ("cnn_small", {}, 8, 2, 32),                       # smallest supported input
    ("mlp", {"image_size": 28}, 28, 1, 16),
    # ABN: the perception branch's output, the plain ResNet's shape
    ("abn_resnet20", {}, 32, 8, 16),
    ("abn_resnet18", {}, 224, 7, 32),
])
def test_feature_map_size(name, kw, size, hw, channels):
    model = small(name, 3, 1, **kw).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 1, size, size))
        logits = model.forward_head(features)
    assert features.shape == (1, channels, hw, hw)
    assert model.num_features == channels
    assert logits.shape == (1, 3)


def count(name: str, **kw) -> int:
    with torch.device("meta"):  # no memory, no init, no forward
        model = build_model(name, 10, **kw)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,published", [
    ("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet110", 1.7e6),  # He et al., table 6
    ("wrn28_2", 1.47e6), ("wrn28_10", 36.5e6),                          # Zagoruyko & Komodakis
])
def test_parameter_counts_match_papers(name, published):
    assert abs(count(name) - published) / published < 0.02


def test_abn_resnet20_parameter_count():
    """ABN-ResNet-20, 10 classes: 479,080 parameters (no published figure; counted
    here so that a change of architecture is noticed).

    * 272,474: ResNet-20 itself (option-B shortcuts), split into stem + stages 1-2
      (the feature extractor), stage 3 (the perception branch) and fc;
    * 206,606: the attention branch:
      - 205,696: a copy of stage 3 at stride 1: first block 18,432 + 36,864 conv
        + 2,048 projection + 3 x 128 BN = 57,728, two more blocks 2 x 73,984;
      - 128 BN(64) + 640 conv 64->10 + 20 BN(10) + 110 classifier conv 10->10
        with bias + 10 map conv 10->1 + 2 BN(1).
    """
    assert count("resnet20") == 272_474
    assert count("abn_resnet20") == 272_474 + 205_696 + 128 + 640 + 20 + 110 + 10 + 2
    assert count("abn_resnet20") == 479_080


def test_default_widths():
    with torch.device("meta"):
        assert build_model("resnet32", 10).num_features == 64
        assert build_model("wrn28_10", 10).num_features == 640
        assert build_model("resnet18", 10).num_features == 512
        assert build_model("mlp", 10).num_features == 256


def test_wrn_template():
    model = build_model("wrn16_1", 10, in_channels=1, width=4)
    assert len(model.blocks) == 3 * 2  # n = (16 - 4) / 6 per group
    assert model_options("wrn16_1") is MODEL_OPTIONS["wrn{depth}_{widen}"]
    assert count("wrn40_4") == pytest.approx(8.9e6, rel=0.02)  # the paper's WRN-40-4


@pytest.mark.parametrize("name,message", [
    ("wrn27_2", "6n+4"), ("wrn4_2", "6n+4"), ("wrn28_0", "k must be >= 1"),
])
def test_wrn_template_rejects_bad_fields(name, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        build_model(name, 10)
    assert repr(name) in str(err.value)


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError) as err:
        build_model("resnet33", 10)
    msg = str(err.value)
    assert "'resnet33'" in msg and "resnet32" in msg and "wrn{depth}_{widen}" in msg


def test_unknown_option_lists_allowed():
    with pytest.raises(ValueError) as err:
        build_model("resnet32", 10, widht=8)
    msg = str(err.value)
    assert "'widht'" in msg and "'width'" in msg and "'stem'" in msg


@pytest.mark.parametrize("name,kw", [
    ("resnet32", {"width": 0}),
    ("resnet32", {"width": 1.5}),
    ("resnet32", {"width": True}),
    ("resnet32", {"stem": "imagenet"}),  # not offered for 32 px networks
    ("abn_resnet20", {"stem": "imagenet"}),
    ("abn_resnet18", {"width": 0}),
    ("resnet18", {"stem": "huge"}),
    ("wrn28_2", {"dropout": 1.0}),
    ("wrn28_2", {"dropout": -0.1}),
    ("wrn28_2", {"dropout": "0.3"}),
    ("mlp", {"hidden": 0}),
    ("cnn_small", {"pool": 0}),
])
def test_invalid_option_value(name, kw):
    (option, value), = kw.items()
    with pytest.raises(ValueError, match=f"'{option}'") as err:
        build_model(name, 10, **kw)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("kw", [{"num_classes": 0}, {"in_channels": 0},
                                {"num_classes": 2.0}, {"in_channels": True}])
def test_invalid_counts(kw):
    args = {"num_classes": 10, "in_channels": 3, **kw}
    with pytest.raises(ValueError, match=next(iter(kw))):
        build_model("mlp", **args)


def test_float_option_accepts_int():
    model = small("wrn16_1", dropout=0)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_dropout_is_used_in_training_only():
    model = small("wrn16_1", dropout=0.5)
    x = torch.randn(2, 3, 8, 8)
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet20")(lambda num_classes, in_channels: nn.Identity())


@pytest.mark.parametrize("name", list_models())
def test_backward_reaches_every_parameter(name):
    """The training loss of a node: CE of the logits, plus CE of the auxiliary
    logits where the model has them (ABN's attention branch)."""
    model = small(name)
    x, y = torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 4])
    out = model.forward_outputs(x)
    loss = nn.functional.cross_entropy(out.logits, y)
    if out.aux_logits is not None:
        loss = loss + nn.functional.cross_entropy(out.aux_logits, y)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_init():
    model = build_model("resnet20", 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    conv = model.blocks[-1].conv2  # 64 -> 64, 3x3: fan_out = 576
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.05)


CASES = [("resnet20", {}), ("wrn16_1", {}), ("resnet18", {}), ("resnet18", {"stem": "large"}),
         ("cnn_small", {}), ("mlp", {}), ("abn_resnet20", {}), ("abn_resnet18", {})]


@pytest.mark.parametrize("name,kw", CASES)
def test_channels_last_matches_contiguous(name, kw):
    size = 70 if kw.get("stem") == "large" else SIZE
    model = small(name, size=size, **kw).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model.forward_outputs(x)
        model = model.to(memory_format=torch.channels_last)
        got = model.forward_outputs(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # torch.compile (Dynamo) of every model
@pytest.mark.parametrize("name,kw", CASES[:3] + CASES[4:])
def test_traces_as_one_graph(name, kw):
    """fullgraph=True fails on any graph break (data-dependent Python control
    flow); the eager backend keeps it fast on CPU.  ``forward_outputs`` runs
    every part of ``forward``; it is compiled as a method, because
    ``torch.compile(model).forward_outputs`` would run the eager one."""
    model = small(name, **kw).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        for method in (model.forward, model.forward_outputs):
            compiled = torch.compile(method, fullgraph=True, backend="eager")
            torch.testing.assert_close(compiled(x), method(x))
