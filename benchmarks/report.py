"""Report of saved runs: kept for old commands; the report lives in
``ktgfast.bench`` (each suite's references and goals are declared in its own
``SUITE``).  Same as ``python -m ktgfast.bench --from-json RUN.json [...]``.

    python benchmarks/report.py benchmarks/results/cpu_gated_edge_loss.json --check
"""
from __future__ import annotations

import sys

from ktgfast.bench.cli import main as _main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    files = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    return _main(["--from-json", *files, *flags])


if __name__ == "__main__":
    sys.exit(main())
