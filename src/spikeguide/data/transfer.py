"""Copies to the training device that do not make the host wait."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``. A CPU tensor goes to a GPU from pinned memory without blocking: a copy
    from ordinary (pageable) memory waits until the GPU has finished the work queued before it."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
