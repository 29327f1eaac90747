"""Shared fixtures of the ktgfast test suite.  Shared helpers live in the
tests/support/ package (``from support.ops import ...``), never here: a
``from conftest import ...`` breaks when pytest also collects the benchmarks/
folder, which has a conftest.py of its own.

Tiers: ``python -m pytest -m "not slow" tests`` is the fast loop; the tests
marked ``slow`` (training runs, subprocess workers, PostgreSQL, torch.compile
and extension builds) run in the full suite."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state (the suite is deterministic)."""
    torch.manual_seed(1234)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = usefixtures("one_thread")``):
    the tiny models gain nothing from two, and on a shared CPU a second spinning
    OpenMP thread makes steps up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_user_cache(tmp_path, monkeypatch):
    """Never touch ~/.cache/ktgfast, even from a test that forgets pretrain_cache."""
    monkeypatch.setenv("KTGFAST_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def data():
    """Tiny synthetic data: 192 train / 64 val / 64 test grey 8x8 images, 4
    classes (48 per class in train); noisy enough that one epoch does not
    already give 100 % everywhere (``support.data.tiny_data()``)."""
    from support.data import tiny_data

    return tiny_data()


@pytest.fixture(scope="module")
def mnist():
    """The real ``mnist5k`` data set (3500 train / 500 val / 1000 test), loaded
    once per module."""
    from ktgfast.data import get_dataset

    return get_dataset("mnist5k")
