"""Helpers shared by several test modules, one module per job:

- ``support.ops``: op tests (tests/test_ops_*.py) -- gate parameters, random
  inputs, upstream weightings, op-vs-reference comparison, CUDA build check;
- ``support.search``: search tests (tests/test_search.py) -- the tiny data set
  ``tinysyn``, search-space files, the ASHA rule, and the ``__main__`` of the
  child processes those tests start;
- ``support.data``: tiny synthetic data sets (``tiny_data``);
- ``support.wait``: waiting for an event (a file, a process state, a storage
  state) with a generous overall limit instead of a fixed sleep.

Test modules import them as ``from support.ops import ...``: pytest puts tests/
on ``sys.path`` (rootdir-relative "prepend" import mode, tests/ has no
``__init__.py``).  Fixtures live in tests/conftest.py, never here.
"""
