"""What a run does when its loss is not finite: ``train.on_nonfinite``.

* ``stop`` (default): the run stops with one line; the last checkpoint is kept. No host sync: the
  device-side finite check (``training/meter.py``) is read every ``train.log_every`` steps and
  before every checkpoint, so nothing trained after the bad step is ever saved.
* ``skip``: the step whose loss is not finite (on any process) trains nothing, neither backward
  nor optimizer update, and is counted. Deciding before the backward pass costs one host sync per
  step (and under data parallelism one all-reduce of one number), which ``stop`` and
  ``rollback`` do without; the step cannot be captured as a CUDA graph.
* ``rollback``: at the read that finds it, the run returns to its last checkpoint with the
  learning rate multiplied by ``train.rollback_lr_factor``, at most ``train.max_rollbacks``
  times; one more stops the run as ``stop`` does. Sync-free like ``stop``.

Every event is one warning line in the log and one JSON line in ``metrics.jsonl``
(``{"event": "nonfinite", "action": ...}``; :func:`~.runlog.read_metrics` passes over them).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpikeguideError

POLICIES = ("stop", "skip", "rollback")


class NonFiniteLoss(SpikeguideError):
    """The loss was not finite at ``step`` of epoch ``epoch`` (0-based)."""

    def __init__(self, message: str, epoch: int, step: int, loss: float | None):
        super().__init__(message, epoch, step, loss)

    def __str__(self) -> str:
        return self.args[0]

    @property
    def event(self) -> dict:
        return {"epoch": self.args[1], "step": self.args[2], "loss": self.args[3]}


def nonfinite_error(value: float | None, epoch: int, step: int, run_dir: str,
                    why: str = "") -> NonFiniteLoss:
    shown = "not finite on another process" if value is None else value
    return NonFiniteLoss(
        f"the loss became {shown} at epoch {epoch + 1} step {step}{why}; training stopped and "
        f"the last good checkpoint in {run_dir!r} is kept. Usual remedies: a lower optim.lr, "
        "another surrogate.width, train.grad_clip", epoch, step, value)


@dataclass
class NonFiniteCounts:
    """What the policy has done so far in this run (kept in its checkpoints)."""

    skipped: int = 0
    rollbacks: int = 0
