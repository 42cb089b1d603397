"""Batch norm fused with the neuron that reads it (``[neuron] fuse_bn``).

A container that runs a batch norm and then a spiking neuron on its output (``TimeSequential``)
asks :func:`bn_neuron_forward` to run the pair as one fused node (:mod:`.kernels.bn_lif`). The
modules stay as they are, so state-dict keys, checkpoints and ANN twins are unchanged; only the
computation is fused. ``fuse_bn`` is an attribute of the neuron:

* ``"auto"`` (default): fuse on the backends where the fused node was measured faster than the
  two layers apart in a whole training step (:data:`AUTO_FUSES`); today none: on CPU the
  ``compiled`` node was slower (docs/speed.md), on CUDA ``triton`` is not yet measured;
* ``"true"``: fuse where the neuron's backend runs the fusion (:data:`BN_BACKENDS`: ``compiled``
  on CPU, ``triton`` for CUDA float32), and a one-line error where it cannot;
* ``"false"``: never fuse.

Either way the pair runs apart, with one logged line per reason, where a method reads the two
layers separately (a forward hook or a replaced ``forward``: rate-based BP's passes, spike
counting, NIR export's shape probe) or the batch norm is not a plain affine ``nn.BatchNorm``
with running statistics and a momentum (e.g. synchronized batch norm).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ..errors import SpikeguideError
from .base import SpikingNeuron, missing_piece
from .kernels import BN_BACKENDS, BNStats, LIFSpec, cpu, fused_bn_forward, resolve_backend

FUSE_BN = ("auto", "true", "false")
AUTO_FUSES: tuple[str, ...] = ()  # backends where "auto" fuses: those measured faster fused
PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
log = logging.getLogger("spikeguide")
_logged: set[str] = set()


def check_fuse_bn(mode: str | bool) -> str:
    """The mode as one of :data:`FUSE_BN` (TOML's booleans true/false included)."""
    if isinstance(mode, bool):
        mode = str(mode).lower()
    if mode not in FUSE_BN:
        raise SpikeguideError(f"neuron.fuse_bn must be one of {', '.join(FUSE_BN)}, got {mode!r}")
    return mode


def set_fuse_bn(model: nn.Module, mode: str) -> None:
    """Set ``fuse_bn`` on every spiking neuron of ``model``."""
    mode = check_fuse_bn(mode)
    for m in model.modules():
        if isinstance(m, SpikingNeuron):
            m.fuse_bn = mode


def _read_apart(m: nn.Module) -> bool:
    """Whether something reads this layer's own call: hooks, or an instance-level ``forward``."""
    return bool(m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__
                or torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def _why_apart(bn: nn.Module, neuron: SpikingNeuron) -> str | None:
    """Why the pair must run apart whatever ``fuse_bn`` says, or None."""
    if _read_apart(bn) or _read_apart(neuron):
        return "a method reads the batch norm or the neuron on its own (a hook or a replaced forward)"
    if not (type(bn) in PLAIN_BATCH_NORMS and bn.affine and bn.track_running_stats
            and bn.momentum is not None):
        return (f"{type(bn).__name__} is not a plain affine batch norm with running statistics "
                "and a momentum")
    return None


def _why_not_backend(neuron: SpikingNeuron, x: torch.Tensor) -> str | None:
    """Why the neuron's backend cannot run the fused pair on ``x``, or None."""
    why = missing_piece(type(neuron), "kernel_spec")
    spec = None if why else neuron.kernel_spec()
    if not isinstance(spec, LIFSpec):
        return why or f"{type(neuron).__name__} has no LIF kernel spec"
    if type(spec.surrogate) not in cpu.SURROGATE_IDS:
        return f"the kernels do not evaluate the surrogate {type(spec.surrogate).__name__}"
    backend = resolve_backend(neuron.backend, x)
    if backend not in BN_BACKENDS or (backend == "compiled" and x.dtype not in cpu.DTYPES):
        return (f"the neuron runs the {backend!r} backend on {x.device.type} {x.dtype} tensors; "
                "the fused batch norm runs on 'compiled' (CPU float32/float64) and 'triton' "
                "(CUDA float32)")
    return None


def _log_once(why: str) -> None:
    if why not in _logged:
        _logged.add(why)
        log.info("batch norm runs apart from the neuron: %s", why)


def bn_neuron_forward(bn: nn.Module, neuron: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The neuron's spikes on ``bn``'s output for ``x`` ``[T, B, C, ...]`` as one fused node, or
    None where the pair runs apart (the caller then runs the two layers)."""
    if not (isinstance(bn, nn.modules.batchnorm._BatchNorm) and isinstance(neuron, SpikingNeuron)):
        return None
    mode = getattr(neuron, "fuse_bn", "auto")
    if (mode == "false" or (mode == "auto" and not AUTO_FUSES) or x.dim() < 3
            or x.shape[2] != bn.num_features):
        return None
    why = _why_apart(bn, neuron)
    if why:
        _log_once(why)
        return None
    why = _why_not_backend(neuron, x)
    if why:
        if mode == "true":
            raise SpikeguideError(f"neuron.fuse_bn = true, but {why}; set neuron.fuse_bn = auto")
        return None
    backend = resolve_backend(neuron.backend, x)
    if mode == "auto" and backend not in AUTO_FUSES:
        return None
    if bn.training:
        bn.num_batches_tracked.add_(1)
    return fused_bn_forward(x, BNStats.of(bn), *neuron.kernel_spec(), backend)
