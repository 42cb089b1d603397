"""``gpu.md`` and ``gpu_check.json``: every section's findings, the recommendation, the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .results import SectionResult, Table

SMOKE_BANNER = ("**Smoke run on CPU at tiny sizes.** It exercises every section's code path; no "
                "figure in it says anything about a GPU.")
MAX_FAILED_LISTED = 20


def summary_table(results: list[SectionResult]) -> Table:
    table = Table("Summary", ["section", "status", "seconds", "checks passed", "left out"])
    for r in results:
        passed = sum(c.passed for c in r.checks)
        table.add(r.title, r.status, f"{r.seconds:.0f}", f"{passed}/{len(r.checks)}" if r.checks
                  else None, len(r.skipped) or None)
    return table


def section_markdown(r: SectionResult) -> str:
    parts = [f"## {r.title}", "", f"Status: **{r.status}**, {r.seconds:.0f} s."]
    if r.error:
        parts += ["", f"The section raised: `{r.error}` (traceback in gpu_check.log)."]
    parts += [f"\n{t.markdown()}" for t in r.tables]
    if r.notes:
        parts += ["", *[f"- {n}" for n in r.notes]]
    failed = [c for c in r.checks if not c.passed]
    if failed:
        parts += ["", f"Failed checks ({len(failed)}):", ""]
        parts += [f"- {c.name}: {c.detail}" for c in failed[:MAX_FAILED_LISTED]]
        if len(failed) > MAX_FAILED_LISTED:
            parts.append(f"- and {len(failed) - MAX_FAILED_LISTED} more (gpu_check.json)")
    if r.skipped:
        parts += ["", "Left out for lack of time:", "", *[f"- {s}" for s in r.skipped]]
    return "\n".join(parts)


def markdown(header: dict[str, Any], results: list[SectionResult], summary: Table,
             recommendation: list[str]) -> str:
    parts = [f"# GPU check: {header['machine']}", ""]
    if header["smoke"]:
        parts += [SMOKE_BANNER, ""]
    parts += [f"Command: `{header['command']}`", "",
              f"Commit: `{header['commit']}`; device: {header['device']}", "",
              f"Started {header['started']} UTC; {header['elapsed_s']:.0f} s of a "
              f"{header['budget_s']:.0f} s budget. Written by `benchmarks/gpu_check.py`; the full "
              "log is gpu_check.log, every figure is also in gpu_check.json.", "",
              summary.markdown(), "", "## The `auto` backend", "",
              *[f"- {line}" for line in recommendation]]
    parts += ["", *[section_markdown(r) + "\n" for r in results]]
    return "\n".join(parts)


def write(out: Path, header: dict[str, Any], results: list[SectionResult],
          recommendation: dict[str, Any]) -> None:
    summary = summary_table(results)
    (out / "gpu.md").write_text(markdown(header, results, summary, recommendation["lines"]))
    document = {**header, "recommendation": recommendation,
                "sections": {r.key: r.to_json() for r in results}}
    (out / "gpu_check.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
