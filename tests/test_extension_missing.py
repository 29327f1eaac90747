"""Without the compiled extension the package imports and the op raises one
actionable error (run in a subprocess so this session's registration is kept)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.wait import WAIT_S

ROOT = Path(__file__).resolve().parents[1]

# How the extension goes missing, and the import error text the hint must carry.
BLOCKERS = {
    # `from . import _C` raises ImportError ("import of ktgfast._C halted; ...")
    "not_built": ('sys.modules["ktgfast._C"] = None', "halted; None in sys.modules"),
    # a built .so that fails to load (e.g. built against another torch)
    "broken": (
        textwrap.dedent(
            """
            class _Broken:
                def find_spec(self, name, path=None, target=None):
                    if name == "ktgfast._C":
                        raise ImportError("undefined symbol: _ZN3c10fake")
                    return None
            sys.meta_path.insert(0, _Broken())
            """
        ),
        "undefined symbol: _ZN3c10fake",
    ),
}

SCRIPT = """
import sys
{block}

import torch
import ktgfast
import ktgfast.ops as ops
import ktgfast.reference as ref
from ktgfast import EdgeSpec, EdgeTable

assert ktgfast.__version__
assert not ops.extension_available()
assert not hasattr(torch.ops.ktgfast, "gated_edge_loss")
# the pure-Python parts keep working
table = EdgeTable([EdgeSpec(src=0, dst=1), EdgeSpec(src="label", dst=0, loss="ce")], 2)
z = torch.randn(2, 3, 4)
y = torch.tensor([0, 1, 2])
out = ref.gated_edge_loss(z, y, table)
assert out.edge_loss.shape == (2,)
for edges in (table, [EdgeSpec(src=0, dst=1)]):
    try:
        ops.gated_edge_loss(z, y, edges)
    except RuntimeError as exc:
        print("MESSAGE-BEGIN")
        print(exc)
    else:
        raise SystemExit("gated_edge_loss did not raise without the extension")
"""


@pytest.mark.slow  # a fresh interpreter importing torch
@pytest.mark.parametrize("how", list(BLOCKERS))
def test_missing_extension_gives_actionable_error(how):
    block, original = BLOCKERS[how]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(block=block)],
        cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    messages = proc.stdout.split("MESSAGE-BEGIN")[1:]
    assert len(messages) == 2, proc.stdout
    for msg in messages:
        assert "pip install --no-build-isolation -e ." in msg
        assert "ktgfast._C" in msg
        assert original in msg  # the underlying import error is shown
