"""Faults injected into a spikeguide process, as its environment asks (``benchmarks/faults.py``
and tests/test_faults.py import this from a ``sitecustomize`` module):

- ``FAULT_KILL_RANK="rank:step,rank:step"``: in torchrun's attempt i (its restart count), rank
  ``rank`` of entry i SIGKILLs itself before training global step ``step``;
- ``FAULT_NAN="first:last"``: the bptt method's loss is NaN at those training forward calls
  (1-based, counted in this process);
- ``FAULT_FULL_DISK="n"``: the n-th checkpoint write of this process fails after 4 KiB with
  ENOSPC;
- ``FAULT_KILL_WORKER=FILE``: the first image a streaming decode worker reads, while ``FILE``
  does not exist, creates it and SIGKILLs that worker.
"""

from __future__ import annotations

import errno
import os
import signal


class FillsUp:
    """A file whose disk fills up after ``room`` bytes."""

    def __init__(self, f, room: int = 4096):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def kill_rank(plan: str) -> None:
    attempts = [tuple(map(int, k.split(":"))) for k in plan.split(",")]
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart >= len(attempts) or int(os.environ.get("RANK", "0")) != attempts[restart][0]:
        return
    from spikeguide.training import trainer

    real_step, at = trainer.Trainer._train_step, attempts[restart][1]

    def dying_step(self, x, y):
        if self.global_step + 1 == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(self, x, y)

    trainer.Trainer._train_step = dying_step


def nan_losses(calls: str) -> None:
    from spikeguide.methods import METHODS

    cls = METHODS.get("bptt")
    first, last = map(int, calls.split(":"))
    real_forward, count = cls.forward, [0]

    def forward(self, x, y):
        loss, logits = real_forward(self, x, y)
        count[0] += 1
        return (loss * float("nan") if first <= count[0] <= last else loss), logits

    cls.forward = forward


def full_disk(nth: int) -> None:
    import torch  # torch.save writes nothing but checkpoints in spikeguide

    real_save, saves = torch.save, [0]

    def save(obj, f):
        saves[0] += 1
        return real_save(obj, FillsUp(f) if saves[0] == nth else f)

    torch.save = save


def kill_worker(flag: str) -> None:
    import torch

    from spikeguide.data.imagefiles import ImageFiles

    real_read = ImageFiles.read

    def read(self, *args, **kwargs):
        if torch.utils.data.get_worker_info() is not None and not os.path.exists(flag):
            open(flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_read(self, *args, **kwargs)

    ImageFiles.read = read


def inject() -> None:
    env = os.environ
    if env.get("FAULT_KILL_RANK"):
        kill_rank(env["FAULT_KILL_RANK"])
    if env.get("FAULT_NAN"):
        nan_losses(env["FAULT_NAN"])
    if env.get("FAULT_FULL_DISK"):
        full_disk(int(env["FAULT_FULL_DISK"]))
    if env.get("FAULT_KILL_WORKER"):
        kill_worker(env["FAULT_KILL_WORKER"])
