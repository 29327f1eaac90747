"""The validation bookkeeping of one Born-Again generation (the self-distillation
paper, §5.1; docs/self_distillation.md): the best validation accuracy so far, and the two patience rules.

After every epoch ``PlateauRule.step(val_acc)`` says whether the accuracy
improved (strictly: the paper's ``acc > acc_max``, with ``acc_max`` starting
at 0) and what to do next:

* ``"end"``   — ``generation_patience`` epochs without a gain (reason
  ``"patience"``), or the generation's epoch cap is reached (``"cap"``);
* ``"reset"`` — every ``plateau_patience`` epochs without a gain: reload the
  generation's best weights and decay the learning rate;
* ``"continue"`` otherwise.

Both patiences count from the last gain: a reset is not a gain, so with the
paper's 20/40 a run that never improves again resets at 20 and ends at 40.
With a plateau patience that divides into the generation patience several
times (e.g. 10/40) it resets at 10, 20 and 30.  Ending wins over resetting.
The rule holds only numbers, so the trainer saves it in its checkpoint.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

ACTIONS = ("continue", "reset", "end")
END_REASONS = ("patience", "cap")


class Decision(NamedTuple):
    improved: bool
    action: str          # one of ACTIONS
    reason: str = ""     # why a generation ends (END_REASONS), else ""


@dataclass
class PlateauRule:
    plateau_patience: int
    generation_patience: int
    max_epochs: int | None = None   # the generation's safety cap
    best: float = 0.0               # best validation accuracy of this generation
    best_epoch: int = 0             # the generation epoch (1-based) that reached it
    epochs: int = 0                 # epochs run in this generation
    since: int = 0                  # epochs since the last gain

    def step(self, acc: float) -> Decision:
        self.epochs += 1
        improved = acc > self.best
        if improved:
            self.best, self.best_epoch, self.since = float(acc), self.epochs, 0
        else:
            self.since += 1
        if self.since >= self.generation_patience:
            return Decision(improved, "end", "patience")
        if self.max_epochs is not None and self.epochs >= self.max_epochs:
            return Decision(improved, "end", "cap")
        if self.since > 0 and self.since % self.plateau_patience == 0:
            return Decision(improved, "reset")
        return Decision(improved, "continue")

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "PlateauRule":
        return cls(**state)


__all__ = ["ACTIONS", "Decision", "END_REASONS", "PlateauRule"]
