"""Shared fixtures of the ktgfast test suite.  (Helpers live in the test modules
themselves: a ``from conftest import ...`` breaks when pytest also collects the
benchmarks/ folder, which has a conftest.py of its own.)"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state (the suite is deterministic)."""
    torch.manual_seed(1234)
    yield
