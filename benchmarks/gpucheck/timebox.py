"""Time boxes: the whole check has a budget, each section a share of it.

Work is done in units small enough to finish once started; before a unit a section asks its box
whether the unit fits, and a unit that does not is recorded as skipped for lack of time. Time a
section leaves unused goes to the last section (the training, which uses whatever is left).
"""

from __future__ import annotations

import time

from .results import SectionResult


class Clock:
    """The check's deadline, ``budget_s`` after it started."""

    def __init__(self, budget_s: float):
        self.start = time.monotonic()
        self.deadline = self.start + budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline - time.monotonic()


class TimeBox:
    """One section's time: ``seconds`` from now, never past the check's deadline minus
    ``reserve`` (kept for writing the results)."""

    def __init__(self, clock: Clock, seconds: float, result: SectionResult, reserve: float = 0.0):
        self.end = min(time.monotonic() + seconds, clock.deadline - reserve)
        self.result = result

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def fits(self, seconds: float, what: str) -> bool:
        """Whether a unit of about ``seconds`` fits; if not, it is recorded as skipped."""
        left = self.left()
        if seconds <= left:
            return True
        self.result.skip(f"{what} (needs about {seconds:.0f} s, {left:.0f} s left)")
        return False
