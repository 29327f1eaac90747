"""EdgeSpec / EdgeTable validation and packing, progress_of, and the agreement of
the Python encodings with the C++ enums."""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from ktgfast import LABEL, EdgeSpec, EdgeTable, progress_of
from ktgfast.edges import (
    GATE_KINDS,
    LABEL_LOSSES,
    LABEL_SOURCE,
    LOSS_KINDS,
    REDUCTIONS,
    as_table,
)

HEADER = Path(__file__).resolve().parents[1] / "csrc" / "common" / "gated_edge_loss.h"


# ---------------------------------------------------------------------------
# EdgeSpec

def test_edge_spec_defaults():
    e = EdgeSpec(src=0, dst=1)
    assert (e.loss, e.gate, e.T, e.weight, e.t2) == ("kl", "through", 1.0, 1.0, True)
    assert (e.f, e.phi, e.tau) == (0.0, 0.0, 0.95)
    assert not e.from_label
    assert EdgeSpec(src=LABEL, dst=1, loss="ce").from_label
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.T = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("src,loss,t2,T,weight,coef", [
    (0, "kl", True, 2.0, 1.0, 4.0),
    (0, "kl", True, 3.0, 0.5, 4.5),
    (0, "kl", False, 3.0, 0.5, 0.5),
    (LABEL, "kl", True, 2.0, 1.5, 6.0),   # KL from the label is CE, still T^2-scaled
    (LABEL, "ce", True, 2.0, 1.5, 1.5),   # t2 scales only KL
    (0, "cos", True, 4.0, 2.0, 2.0),
    (0, "pl", True, 4.0, 2.0, 2.0),
    (0, "kl", True, 1.0, -0.25, -0.25),
])
def test_coef(src, loss, t2, T, weight, coef):
    e = EdgeSpec(src=src, dst=1, loss=loss, T=T, t2=t2, weight=weight)
    assert e.coef == pytest.approx(coef, rel=0, abs=0)


@pytest.mark.parametrize("gate,params", [
    ("sine", (0.25, 1.5)), ("threshold", (0.8, 0.0)), ("through", (0.0, 0.0)),
    ("linear", (0.0, 0.0)), ("correct", (0.0, 0.0)), ("cutoff", (0.0, 0.0)),
    ("neg_linear", (0.0, 0.0)),
])
def test_gate_params(gate, params):
    assert EdgeSpec(src=0, dst=1, gate=gate, f=0.25, phi=1.5, tau=0.8).gate_params() == params


@pytest.mark.parametrize("spec,pattern", [
    (EdgeSpec(src=0, dst=1, loss="mse"), r"unknown e\.loss 'mse'; allowed: kl, ce, cos, pl"),
    (EdgeSpec(src=0, dst=1, gate="open"),
     r"unknown e\.gate 'open'; allowed: through, cutoff, linear, neg_linear, correct, sine, "
     r"threshold"),
    (EdgeSpec(src=3, dst=1), r"e\.src = 3 is not a node; allowed: 'label' or 0\.\.2"),
    (EdgeSpec(src=-1, dst=1), r"e\.src = -1 is not a node"),
    (EdgeSpec(src=True, dst=1), r"e\.src must be a node index or 'label', got True"),
    (EdgeSpec(src="teacher", dst=1), r"e\.src must be a node index or 'label', got 'teacher'"),
    (EdgeSpec(src=1.0, dst=1), r"e\.src must be a node index or 'label', got 1\.0"),
    (EdgeSpec(src=0, dst=5), r"e\.dst = 5 is not a node; allowed: 0\.\.2"),
    (EdgeSpec(src=0, dst=-1), r"e\.dst = -1 is not a node"),
    (EdgeSpec(src=0, dst=False), r"e\.dst = False is not a node"),
    (EdgeSpec(src=0, dst=LABEL), r"e\.dst = 'label' is not a node"),
    (EdgeSpec(src=LABEL, dst=1, loss="cos"), r"loss 'cos' cannot come from the label; allowed: kl, ce"),
    (EdgeSpec(src=LABEL, dst=1, loss="pl"), r"loss 'pl' cannot come from the label"),
    (EdgeSpec(src=0, dst=1, loss="ce"), r"loss 'ce' is the label edge's loss"),
    (EdgeSpec(src=0, dst=1, T=0.0), r"e\.T = 0\.0; the temperature must be a finite number > 0"),
    (EdgeSpec(src=0, dst=1, T=-2.0), r"e\.T = -2\.0"),
    (EdgeSpec(src=0, dst=1, T=math.inf), r"e\.T = inf"),
    (EdgeSpec(src=0, dst=1, T=math.nan), r"e\.T = nan"),
    (EdgeSpec(src=0, dst=1, weight=math.inf), r"e\.weight = inf; it must be finite"),
    (EdgeSpec(src=0, dst=1, weight=math.nan), r"e\.weight = nan"),
    (EdgeSpec(src=0, dst=1, gate="sine", f=math.inf), r"sine gate parameters must be finite, got f=inf"),
    (EdgeSpec(src=0, dst=1, gate="sine", phi=math.nan), r"got f=0\.0, phi=nan"),
    (EdgeSpec(src=0, dst=1, gate="threshold", tau=1.5), r"e\.tau = 1\.5; a probability threshold must be in \[0, 1\]"),
    (EdgeSpec(src=0, dst=1, gate="threshold", tau=-0.1), r"e\.tau = -0\.1"),
    (EdgeSpec(src=0, dst=1, gate="threshold", tau=math.nan), r"e\.tau = nan"),
])
def test_validate_errors(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        spec.validate(3, "e")


@pytest.mark.parametrize("spec", [
    EdgeSpec(src=0, dst=0),                      # self-loop (consistency edge)
    EdgeSpec(src=2, dst=0, loss="cos", gate="correct"),
    EdgeSpec(src=LABEL, dst=2, loss="kl", gate="threshold", tau=1.0),
    EdgeSpec(src=LABEL, dst=1, loss="ce", gate="sine", f=3.0, phi=-1.0),
    EdgeSpec(src=1, dst=2, loss="pl", gate="neg_linear", T=1e-3, weight=0.0, tau=0.0),
])
def test_validate_ok(spec):
    assert spec.validate(3) is spec


# ---------------------------------------------------------------------------
# EdgeTable

def test_edge_table_packing():
    specs = [
        EdgeSpec(src=LABEL, dst=0, loss="ce", gate="through", T=2.0, weight=0.5),
        EdgeSpec(src=LABEL, dst=1, loss="kl", gate="correct", T=2.0),
        EdgeSpec(src=0, dst=1, loss="kl", gate="linear", T=3.0, weight=2.0, t2=True),
        EdgeSpec(src=1, dst=0, loss="kl", gate="neg_linear", T=3.0, weight=2.0, t2=False),
        EdgeSpec(src=2, dst=1, loss="cos", gate="sine", f=0.5, phi=4.0),
        EdgeSpec(src=0, dst=2, loss="pl", gate="threshold", tau=0.7),
        EdgeSpec(src=2, dst=2, loss="kl", gate="cutoff"),
    ]
    t = EdgeTable(specs, 3)
    assert len(t) == 7 and t.num_slots == 3 and t.specs == tuple(specs)
    assert t.device == torch.device("cpu")
    assert t.edge_index.dtype == torch.int32 and t.edge_index.shape == (7, 4)
    assert t.edge_params.dtype == torch.float64 and t.edge_params.shape == (7, 4)
    assert t.edge_index.is_contiguous() and t.edge_params.is_contiguous()
    L, G = LOSS_KINDS, GATE_KINDS
    assert t.edge_index.tolist() == [
        [LABEL_SOURCE, 0, L["ce"], G["through"]],
        [-1, 1, L["kl"], G["correct"]],
        [0, 1, L["kl"], G["linear"]],
        [1, 0, L["kl"], G["neg_linear"]],
        [2, 1, L["cos"], G["sine"]],
        [0, 2, L["pl"], G["threshold"]],
        [2, 2, L["kl"], G["cutoff"]],
    ]
    assert t.edge_params.tolist() == [
        [2.0, 0.5, 0.0, 0.0],
        [2.0, 4.0, 0.0, 0.0],      # weight * T^2 (label KL, t2)
        [3.0, 18.0, 0.0, 0.0],     # 2 * 3^2
        [3.0, 2.0, 0.0, 0.0],      # t2 off
        [1.0, 1.0, 0.5, 4.0],      # sine: f, phi
        [1.0, 1.0, 0.7, 0.0],      # threshold: tau
        [1.0, 1.0, 0.0, 0.0],
    ]
    assert t.destinations().tolist() == [0, 1, 1, 0, 1, 2, 2]
    assert t.destinations().dtype == torch.long
    assert repr(t) == "EdgeTable(7 edges, 3 slots, cpu)"


def test_edge_table_empty():
    t = EdgeTable([], 2)
    assert len(t) == 0
    assert t.edge_index.shape == (0, 4) and t.edge_index.dtype == torch.int32
    assert t.edge_params.shape == (0, 4) and t.edge_params.dtype == torch.float64


def test_edge_table_accepts_generator_and_names_bad_edge():
    t = EdgeTable((EdgeSpec(src=i, dst=(i + 1) % 3) for i in range(3)), 3)
    assert len(t) == 3
    with pytest.raises(ValueError, match=r"edges\[2\]\.dst = 3 is not a node; allowed: 0\.\.2"):
        EdgeTable([EdgeSpec(src=0, dst=1), EdgeSpec(src=1, dst=2), EdgeSpec(src=0, dst=3)], 3)
    with pytest.raises(ValueError, match=r"unknown edges\[1\]\.gate 'sin'"):
        EdgeTable([EdgeSpec(src=0, dst=1), EdgeSpec(src=1, dst=2, gate="sin")], 3)


@pytest.mark.parametrize("n", [0, -1, True, 2.0, "3", None])
def test_edge_table_bad_num_slots(n):
    with pytest.raises(ValueError, match="num_slots must be a positive int"):
        EdgeTable([], n)


def test_edge_table_to_and_as_table():
    t = EdgeTable([EdgeSpec(src=0, dst=1)], 2)
    u = t.to("cpu")
    assert u is not t and u.specs == t.specs and u.num_slots == 2
    assert torch.equal(u.edge_index, t.edge_index) and torch.equal(u.edge_params, t.edge_params)
    assert as_table(t, 2, "cpu") is t
    assert as_table(t, 2, torch.device("cpu")) is t
    built = as_table([EdgeSpec(src=0, dst=1)], 2, "cpu")
    assert isinstance(built, EdgeTable) and torch.equal(built.edge_index, t.edge_index)
    with pytest.raises(ValueError, match="edge table was built for 2 nodes but logits have 3"):
        as_table(t, 3, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_edge_table_to_cuda():
    t = EdgeTable([EdgeSpec(src=0, dst=1, loss="cos")], 2, "cuda")
    assert t.device.type == "cuda" and t.edge_params.device.type == "cuda"
    back = t.to("cpu")
    assert back.device == torch.device("cpu")
    assert as_table(back, 2, "cuda").device.type == "cuda"


# ---------------------------------------------------------------------------
# progress_of

@pytest.mark.parametrize("total", [2, 3, 7, 10, 391, 100_000])
def test_progress_of_endpoints(total):
    assert progress_of(0, total) == 0.0
    assert progress_of(total - 1, total) == 1.0  # exactly 1 at the last step
    assert progress_of(total, total) == 1.0
    assert progress_of(10 * total, total) == 1.0
    assert progress_of(-5, total) == 0.0


def test_progress_of_last_step_is_exactly_one_for_every_length():
    assert all(progress_of(n - 1, n) == 1.0 for n in range(2, 3000))


@pytest.mark.parametrize("total", [1, 0, -3])
def test_progress_of_degenerate_runs(total):
    assert progress_of(0, total) == 1.0
    assert progress_of(5, total) == 1.0


def test_progress_of_values():
    assert progress_of(5, 11) == 0.5
    assert progress_of(1, 5) == 0.25
    vals = [progress_of(k, 20) for k in range(20)]
    assert all(isinstance(v, float) for v in vals)
    assert vals == sorted(vals) and len(set(vals)) == 20
    assert all(0.0 <= v <= 1.0 for v in vals)


# ---------------------------------------------------------------------------
# The encodings agree with the C++ header.

def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()  # NegLinear -> neg_linear, KL -> kl


def _enum(prefix: str) -> dict:
    text = HEADER.read_text()
    found = re.findall(rf"\bk{prefix}(\w+)\s*=\s*(-?\d+)", text)
    return {_camel_to_snake(n): int(v) for n, v in found}


def test_encodings_match_cpp_header():
    assert _enum("Loss") == LOSS_KINDS
    assert _enum("Gate") == GATE_KINDS
    text = HEADER.read_text()
    assert f"kNumLossKinds = {len(LOSS_KINDS)}" in text
    assert f"kNumGateKinds = {len(GATE_KINDS)}" in text
    assert re.search(rf"kLabelSource\s*=\s*{LABEL_SOURCE}\b", text)
    assert _enum("Reduce") == REDUCTIONS
    assert set(LABEL_LOSSES) <= set(LOSS_KINDS)
