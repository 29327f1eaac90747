"""Per-epoch metrics to CSV (rewritten from the history, so a resumed run never
duplicates rows), TensorBoard when available, and one console line."""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from .checkpoint import atomic_write_text


# Wall-clock columns of metrics.csv: they differ between two runs of the same
# math (a resumed run re-times its first step), everything else must not.
TIMING_COLUMNS = frozenset({"time_s", "images_per_s", "warmup_s", "cum_time_s"})

_TOLD: set[str] = set()


def _say_tensorboard_missing() -> None:
    """Once per process: TensorBoard is on (the default) but not installed."""
    if "tensorboard" not in _TOLD:
        _TOLD.add("tensorboard")
        print("note: TensorBoard is not installed (pip install tensorboard), so the curves go to "
              "metrics.csv only; --tensorboard false silences this note", file=sys.stderr, flush=True)


class MetricsLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.history: list[dict] = []
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                _say_tensorboard_missing()

    def add(self, row: dict) -> None:
        self.history.append(row)

    def write(self, row: dict) -> None:
        """CSV (whole history) and TensorBoard for the newest row."""
        if not self.enabled:
            return
        self.write_csv()
        if self.writer is not None:
            step = row["epoch"]
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k.replace("/", "_").replace(":", "/", 1), v, step)
            self.writer.flush()

    def write_csv(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.history)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(buf.getvalue(), self.run_dir / "metrics.csv")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
