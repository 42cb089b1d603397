"""The training loss, the correct count and the finite-loss check, kept on the training device.

Reading a number off a GPU waits for every kernel queued before it (a host synchronisation), so a
step that reads its loss stops the CPU from queueing the next steps ahead of the GPU. The meter
only adds on the device; the Trainer reads it (:meth:`StepMeter.read`, one transfer, and under
data parallelism two all-reduces of tensors) once every ``train.log_every`` steps, before every
checkpoint, when it stops and at the end of each epoch.

The finite check has two parts:

* :attr:`StepMeter.step_finite`: a 0-dim bool tensor on the device, whether the last step's loss
  was finite (set by :meth:`StepMeter.add`; what a device-side reaction, such as skipping the
  optimizer update of that step, reads);
* :attr:`Reading.nonfinite_at`: read once per interval, the index (in the epoch) of the first step
  since the last read whose loss was not finite, on any process, and :attr:`Reading.nonfinite_loss`
  its value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .distributed import DistInfo


@dataclass(frozen=True)
class Reading:
    """The meter's values at one read, summed over processes."""

    loss_sum: float  # sum over the epoch's samples so far of the batch loss
    correct: int
    seen: int
    nonfinite_at: int | None  # the epoch step of the first non-finite loss since the last read
    nonfinite_loss: float | None  # its value (None if another process saw it first)


class StepMeter:
    """Epoch sums of ``loss * batch`` (float64) and correct predictions (int64) on ``device``,
    and the finite check of the steps since the last read."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0  # batch sizes are known on the host: the caller counts them
        self.step_finite = torch.ones((), dtype=torch.bool, device=device)
        self._all_finite = torch.ones((), dtype=torch.bool, device=device)  # since the last read
        # steps since the last read before the first non-finite loss
        self._finite_steps = torch.zeros((), dtype=torch.int64, device=device)
        self._bad_loss = torch.zeros((), dtype=torch.float32, device=device)
        self._first_step = 0  # the epoch step at the last read

    def start_epoch(self, loss_sum: float = 0.0, correct: int = 0, seen: int = 0,
                    step: int = 0) -> None:
        """Start the sums at the given values (a resumed epoch's), at epoch step ``step``."""
        self.loss_sum.fill_(loss_sum)
        self.correct.fill_(correct)
        self.seen = seen
        self._restart_interval(step)

    def _restart_interval(self, step: int) -> None:
        self._all_finite.fill_(True)
        self._finite_steps.zero_()
        self._first_step = step

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Add one step's loss (the batch mean) and predictions: in-place device operations only
        (a CUDA graph of the step captures them); the caller adds the batch size to
        :attr:`seen`."""
        loss = loss.detach()
        finite = torch.isfinite(loss)
        self.step_finite.copy_(finite)
        self._bad_loss.copy_(torch.where(self._all_finite & ~finite, loss.float(), self._bad_loss))
        self._all_finite.logical_and_(finite)
        self._finite_steps.add_(self._all_finite)
        # float64 products and sums: the same arithmetic as Python floats of the loss
        self.loss_sum.add_(loss.double() * len(y))
        self.correct.add_((logits.argmax(1) == y).sum())

    def read(self, step: int, info: DistInfo) -> Reading:
        """The sums over processes and the finite check since the last read (the host waits for
        the device here); the next interval starts at epoch step ``step``."""
        seen = torch.tensor(float(self.seen), dtype=torch.float64, device=self.device)
        totals = torch.stack([self.loss_sum, self.correct.double(), seen])
        finite_steps = self._finite_steps.clone()
        if info.enabled:
            dist.all_reduce(totals)
            dist.all_reduce(finite_steps, op=dist.ReduceOp.MIN)
        values = torch.cat([totals, finite_steps.double().view(1),
                            self._finite_steps.double().view(1),
                            self._bad_loss.double().view(1)]).tolist()
        loss_sum, correct, seen, first_ok, local_ok, bad_loss = values
        steps = step - self._first_step
        nonfinite_at = None
        if first_ok < steps:
            nonfinite_at = self._first_step + int(first_ok)
        self._restart_interval(step)
        return Reading(loss_sum, int(correct), int(seen), nonfinite_at,
                       bad_loss if nonfinite_at is not None and local_ok == first_ok else None)
