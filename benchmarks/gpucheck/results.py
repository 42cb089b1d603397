"""What a section of the check finds: tables, pass/fail checks, notes and what it left out.

Everything is printed as it is recorded, so the console (and the device tool's output tail)
follows the check live; the same records become ``gpu.md`` and ``gpu_check.json`` at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.1f}"
    return str(value)


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        print(f"\n{self.title}\n{self.markdown_row(self.header)}\n|{'---|' * len(self.header)}",
              flush=True)

    @staticmethod
    def markdown_row(cells: list[Any]) -> str:
        return "| " + " | ".join(cell(c) for c in cells) + " |"

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.header):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.header)} columns")
        self.rows.append(list(cells))
        print(self.markdown_row(list(cells)), flush=True)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", self.markdown_row(self.header),
                 "|" + "---|" * len(self.header)]
        return "\n".join(lines + [self.markdown_row(r) for r in self.rows])


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class SectionResult:
    """One section's findings. ``status``: ``ok``; ``failed`` (a check failed); ``error`` (the
    section raised, see ``error``); ``partial`` (some work left out for lack of time)."""

    key: str
    title: str
    seconds: float = 0.0
    error: str | None = None
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # figures other sections read

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        if any(not c.passed for c in self.checks):
            return "failed"
        return "partial" if self.skipped else "ok"

    def table(self, title: str, header: list[str]) -> Table:
        table = Table(title, header)
        self.tables.append(table)
        return table

    def note(self, text: str) -> None:
        print(f"# {text}", flush=True)
        self.notes.append(text)

    def skip(self, what: str) -> None:
        print(f"# skipped for lack of time: {what}", flush=True)
        self.skipped.append(what)

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, passed, detail))
        if not passed:
            print(f"# FAILED {name}: {detail}", flush=True)
        return passed

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "status": self.status, "seconds": round(self.seconds, 1),
                "error": self.error, "tables": [asdict(t) for t in self.tables],
                "checks": [asdict(c) for c in self.checks], "notes": self.notes,
                "skipped": self.skipped, "data": self.data}
