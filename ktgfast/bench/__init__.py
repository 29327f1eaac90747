"""``python -m ktgfast.bench``: run the benchmark suites of a checkout
(``benchmarks/test_bench_*.py``, pytest-benchmark), save one JSON per suite
with machine info, print one report (medians, IQRs, ratios to ktgfast, each
suite's own goals).  See ``benchmarks/README.md``."""
from .report import report_suite
from .suites import Suite, discover

__all__ = ["Suite", "discover", "report_suite"]
