"""What ``auto`` should pick on this device, from what the check measured.

Candidates are spikeguide's backends timed on every network of the float32 speed groups that
failed no correctness check on the device (the ``torch`` reference cannot fail). A backend's
score is the geometric mean over the networks of its best img/s (either memory format) relative
to the backend ``auto`` runs on the device today (``fused`` on CUDA); another one replaces that
only when it is more than ``NOISE`` faster. bf16 groups and the ``torch.compile`` rows (a way
to run ``auto``, not a backend) are left out.
"""

from __future__ import annotations

import math
from typing import Any

import torch

NOISE = 0.03
FORMATS = ("contiguous", "channels_last")


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def float32_rates(groups: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(backend, memory format) -> {network: best img/s} of the float32 groups."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for group in groups:
        if group["precision"] != "fp32":
            continue
        for row in group["rows"].values():
            if row["kind"] == "spikeguide" and "rates" in row and "compile" not in row["backend"]:
                key = (row["backend"], row["format"])
                out.setdefault(key, {})[group["network"]] = max(row["rates"])
    return out


def channels_last_line(rates: dict[tuple[str, str], dict[str, float]], backend: str,
                       networks: list[str]) -> tuple[dict[str, float], list[str]]:
    """channels_last over contiguous for ``backend`` on every network, and the verdict."""
    if not all(n in rates.get((backend, f), {}) for f in FORMATS for n in networks):
        return {}, []
    gains = {n: rates[backend, "channels_last"][n] / rates[backend, "contiguous"][n]
             for n in networks}
    gain = geometric_mean(list(gains.values()))
    verdict = ("worth `train.channels_last = true` on this device" if gain >= 1 + NOISE
               else "not faster: the default (off) stays")
    return gains, [f"channels_last with {backend!r}: {gain:.2f}x contiguous (geometric mean): "
                   f"{verdict}."]


def recording_line(device: torch.device, correctness: dict[str, Any]) -> str:
    """What the check says of rate-BP's Triton recording kernel, which CUDA uses only once it is
    switched on (TRITON_RECORD_ON_CUDA in src/spikeguide/neurons/kernels/record.py)."""
    if device.type != "cuda":
        return "Recording kernel: Triton's is checked on a GPU only."
    checked = correctness.get("checked", [])
    if "record triton" not in checked:
        return "Recording kernel: the Triton kernel was not checked (no time, or no Triton)."
    if "record triton" in correctness.get("failed", []):
        return "Recording kernel: the Triton kernel FAILED; CUDA keeps the eager loop."
    return ("Recording kernel: the Triton kernel passed on this device; switch it on: "
            "TRITON_RECORD_ON_CUDA = True in src/spikeguide/neurons/kernels/record.py.")


def recommend_auto(groups: list[dict[str, Any]], failed: list[str], today: str) -> dict[str, Any]:
    """``failed``: backends that failed a correctness check; ``today``: what ``auto`` resolves to
    on the device now."""
    rates = float32_rates(groups)
    networks = sorted({g["network"] for g in groups if g["precision"] == "fp32"})
    best: dict[str, dict[str, float]] = {}  # backend -> network -> best of both formats
    for (backend, _), per_network in rates.items():
        for network, rate in per_network.items():
            mine = best.setdefault(backend, {})
            mine[network] = max(rate, mine.get(network, 0.0))
    lines = [f"`auto` on this device today: {today!r}."]
    lines += [f"{b!r} FAILED correctness on this device: it must not be picked here; fix it, or "
              "refuse it on this device, with a test." for b in failed]
    if not networks or set(best.get(today, {})) != set(networks):
        lines.append(f"No float32 speed figure of {today!r} on every network: no recommendation.")
        return {"today": today, "recommended": None, "ratios": {}, "lines": lines}
    ratios = {b: geometric_mean([per[n] / best[today][n] for n in networks])
              for b, per in best.items() if b not in failed and set(per) == set(networks)}
    if not ratios:
        lines.append("No backend passed the correctness checks and ran on every network.")
        return {"today": today, "recommended": None, "ratios": {}, "lines": lines}
    winner = max(ratios, key=ratios.get)
    if ratios[winner] < 1 + NOISE and today not in failed:
        winner = today
    lines.append(f"Measured, float32, best of both memory formats, relative to {today!r} "
                 f"(geometric mean over {len(networks)} network(s)): "
                 + ", ".join(f"{b} {r:.2f}x" for b, r in sorted(ratios.items())) + ".")
    if winner == today:
        lines.append(f"Recommendation: keep {today!r} (no backend was more than "
                     f"{NOISE:.0%} faster).")
    else:
        lines.append(f"Recommendation: `auto` picks {winner!r} for float32 tensors on this kind of "
                     f"device (other dtypes keep {today!r}). The change is the 'auto' branch of "
                     "resolve_backend in src/spikeguide/neurons/kernels/__init__.py.")
    gains, layout_lines = channels_last_line(rates, winner, networks)
    return {"today": today, "recommended": winner, "ratios": ratios, "channels_last": gains,
            "lines": lines + layout_lines}
