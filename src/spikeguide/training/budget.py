"""``train.time_budget``: a run that chooses its number of epochs to end within a time budget.

The Trainer trains its first steps as usual and times them; from the steady step time
(the first step, which builds kernels and grows the allocator, is left out) it estimates an
epoch, evaluation included, and plans as many epochs as fit the budget (at most
``train.epochs``). At the end of the first epoch it plans once more, from that epoch's mean step.
The learning-rate schedule (warm-up, cosine) is laid out over the planned epochs, so the second
plan re-lays the rest of it.
The plan goes into every checkpoint, so a resumed run keeps it instead of estimating again;
should the estimate run short, the run stops at the deadline with a checkpoint, finished.

The budget counts the run's training and evaluation, every resumed process included, from the
start of its first step; loading the data and building the model come before it. A teacher
recipe trained first takes ``teacher.budget_share`` of the student's budget, the student the
rest: the whole budget less the seconds the teacher's run recorded, so that what a teacher's
plan leaves of its share (its last epoch did not fit) is not lost.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from ..errors import SpikeguideError

PROBE_STEPS = 5  # steady steps timed after the first one
# an evaluation step is a forward pass without the teacher: about a third of a training step
EVAL_STEP_SHARE = 1 / 3
MARGIN = 1.1  # on the estimated time: logging, checkpoints, the loader's epoch starts
UNITS = {"s": 1, "m": 60, "h": 3600}


def now() -> float:
    """The budget's clock (tests replace it)."""
    return time.monotonic()


def parse_duration(value: str | float, key: str = "train.time_budget") -> float:
    """Seconds of ``"8m"``, ``"2h"``, ``"90s"``, ``"1h30m"`` or a number of seconds."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif parts and re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*[hms])+", text):
            seconds = sum(float(n) * UNITS[u] for n, u in parts)
        else:
            raise SpikeguideError(f"{key} must be a duration like '8m', '2h', '90s' or a number "
                                  f"of seconds, got {value!r}")
    if not seconds > 0:
        raise SpikeguideError(f"{key} must be positive, got {value!r}")
    return seconds


def check_budget(cfg: Any) -> None:
    """The budget settings' values, one line naming the key."""
    share = cfg.teacher.budget_share
    if cfg.train.time_budget is not None:
        parse_duration(cfg.train.time_budget)
    if share is None:
        return
    if not 0 < share < 1:
        raise SpikeguideError(f"teacher.budget_share must be in (0, 1), got {share}")
    if cfg.train.time_budget is None or cfg.teacher.recipe is None:
        raise SpikeguideError("teacher.budget_share needs train.time_budget and teacher.recipe "
                              "(the share of the budget the teacher recipe trains in)")


def run_seconds(cfg: Any, teacher_spent_s: float | None = None) -> float | None:
    """The seconds this run's own training may take (None: no budget): ``train.time_budget``,
    less the teacher's share when a teacher recipe takes one. ``teacher_spent_s``: the seconds
    the teacher's run recorded; what it left of its share goes to the student."""
    if cfg.train.time_budget is None:
        return None
    seconds = parse_duration(cfg.train.time_budget)
    if not cfg.teacher.budget_share:
        return seconds
    share_s = seconds * cfg.teacher.budget_share
    return seconds - (share_s if teacher_spent_s is None else min(share_s, teacher_spent_s))


def teacher_seconds(cfg: Any) -> float | None:
    """The teacher recipe's budget: its share of the student's (None: the recipe's own)."""
    if cfg.teacher.budget_share is None:
        return None
    return parse_duration(cfg.train.time_budget) * cfg.teacher.budget_share


@dataclass(frozen=True)
class EpochCost:
    """What an epoch is made of, in steps and images, for the estimate."""

    steps: int  # training steps per epoch
    batch_size: int
    eval_images: int  # images scored after every epoch (validation, or test)
    final_images: int  # images scored once at the end (test, after a validation split)


@dataclass(frozen=True)
class Plan:
    epochs: int
    step_s: float
    epoch_s: float  # one epoch with its evaluation, margin included
    end_s: float  # the estimated time of the whole run

    def describe(self, budget_s: float, cap: int) -> str:
        return (f"time budget {budget_s:.0f} s: a step takes {self.step_s * 1e3:.1f} ms, an "
                f"epoch about {self.epoch_s:.1f} s with its evaluation; {self.epochs} epoch(s) "
                f"(at most {cap}) planned to end after about {self.end_s:.0f} s")


def plan_epochs(budget_s: float, spent_s: float, steps_done: int, step_s: float,
                cost: EpochCost, cap: int) -> Plan:
    """The epochs that fit ``budget_s``, ``spent_s`` of it spent on the first ``steps_done``
    steps; at least one, at most ``cap``."""
    eval_s = step_s * EVAL_STEP_SHARE / cost.batch_size
    epoch_s = MARGIN * (cost.steps * step_s + cost.eval_images * eval_s)
    final_s = MARGIN * cost.final_images * eval_s
    # what the steps so far cost beyond steady steps (the first one's kernel builds) is spent once
    overhead_s = max(0.0, spent_s - steps_done * step_s)
    epochs = max(1, min(cap, math.floor((budget_s - overhead_s - final_s) / epoch_s)))
    return Plan(epochs, step_s, epoch_s, overhead_s + epochs * epoch_s + final_s)


class TimeBudget:
    """The clock of a budgeted run: the spent time (earlier processes' included), the timed
    first steps, and the deadline."""

    def __init__(self, seconds: float, spent_before: float = 0.0):
        self.seconds = seconds
        self.spent_before = spent_before
        self.start = self.mark = now()
        self.step_times: list[float] = []

    def restart(self, spent_before: float) -> None:
        """Count from now, ``spent_before`` already spent (a fit's start, perhaps resumed)."""
        self.spent_before, self.start, self.mark = spent_before, now(), now()
        self.step_times = []

    def spent(self) -> float:
        return self.spent_before + now() - self.start

    def expired(self) -> bool:
        return self.spent() >= self.seconds

    def time_step(self) -> bool:
        """Record the step that just ended; True once the first steps are timed (an epoch of
        fewer steps is planned from those it has)."""
        t = now()
        self.step_times.append(t - self.mark)
        self.mark = t
        return len(self.step_times) > PROBE_STEPS

    def plan(self, cost: EpochCost, cap: int) -> Plan:
        steady = sorted(self.step_times[1:] or self.step_times)
        step_s = steady[len(steady) // 2]  # the median: a stall does not stretch the estimate
        return plan_epochs(self.seconds, self.spent(), len(self.step_times), step_s, cost, cap)

    def replan(self, cost: EpochCost, cap: int, steps: int) -> Plan:
        """The plan again once the first ``steps`` steps (a whole epoch, trained from the
        restart) are done: from their mean time, the first step left out. A few probe steps
        missed the loader's steady pace and varied by 30 % between runs (results/fast_cpu.md)."""
        trained_s = now() - self.start
        step_s = (trained_s - self.step_times[0]) / max(1, steps - 1)
        return plan_epochs(self.seconds, self.spent(), steps, step_s, cost, cap)
