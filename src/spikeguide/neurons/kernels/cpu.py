"""The CPU extension (``lif_cpu.cpp``), compiled on first use and cached by PyTorch.

The build needs a C++ compiler and ninja; it takes about a minute once per machine and source
version (cached under ``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).
"""

from __future__ import annotations

import logging
import platform
import warnings
from pathlib import Path

import torch

from ...errors import SpikeguideError
from ..surrogates import ATan, FastSigmoid, Rectangle, Sigmoid, Surrogate, Triangle
from .fused import threshold_neighbours

# Built-in surrogates the kernel evaluates itself; any other one is evaluated in torch first.
SURROGATE_IDS = {Rectangle: 0, Triangle: 1, Sigmoid: 2, ATan: 3, FastSigmoid: 4}
# the recording and fused batch-norm kernels compute in the tensors' own dtype: these
DTYPES = (torch.float32, torch.float64)
# the neuron's two loops also run bfloat16 and float16 tensors, the membrane and arithmetic
# float32 in registers (as the Triton kernels do)
LIF_DTYPES = (*DTYPES, torch.bfloat16, torch.float16)


SOURCE = Path(__file__).with_name("lif_cpu.cpp")
log = logging.getLogger("spikeguide")
_BUILT: tuple | None = None  # (extension or None, error or None), once built or failed


# The vector instructions the kernels are built for, by the capability torch detects on this CPU
# (``torch.backends.cpu.get_cpu_capability()``, which ATEN_CPU_CAPABILITY can lower). Each
# capability builds under its own name, so a cache shared between machines never hands one a
# build it cannot run. The default x86-64 target is SSE2: AVX-512 ran a bf16 LIF layer 3.8x as
# fast on this project's machine, a float32 one 1.35x (docs/speed.md, "The C++ build").
# The instruction sets alone (not -march=x86-64-v4/-v3): older compilers know them, and they
# assume nothing else of the CPU (a VM may hide BMI2 or MOVBE from a v3 machine).
ARCH_FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
              "AVX2": ["-mavx2"]}


PORTABLE = ("spikeguide_lif_cpu", [])  # the compiler's default target


def build_target() -> tuple[str, list[str]]:
    """The extension's name and the compiler flags that target this CPU's vector unit."""
    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() not in ("x86_64", "amd64") or capability not in ARCH_FLAGS:
        return PORTABLE
    return f"spikeguide_lif_cpu_{capability.lower()}", ARCH_FLAGS[capability]


def needs_build(build_dir: Path, name: str) -> bool:
    """Whether the extension ``name`` has no build in ``build_dir`` newer than its source."""
    built = build_dir / f"{name}.so"
    return not built.is_file() or built.stat().st_mtime < SOURCE.stat().st_mtime


def _build():
    # a module global, not functools.cache: torch.compile reads it as a constant once set
    global _BUILT
    if _BUILT is None:
        _BUILT = _load()
    return _BUILT


def _load():
    name, arch_flags = build_target()
    built = _compile(name, arch_flags)
    if built[0] is None and arch_flags:  # a compiler without these flags: the portable build
        log.warning("the C++ LIF kernel did not build for this CPU's vector unit (%s); building "
                    "the portable one", built[1])
        built = _compile(*PORTABLE)
    if built[0] is None:
        warnings.warn(f"spikeguide: the C++ LIF kernel did not build ({built[1]}); the 'auto' "
                      "neuron backend falls back to 'fused'", RuntimeWarning, stacklevel=2)
    return built


def _compile(name: str, arch_flags: list[str]):
    """(the extension, None), or (None, the build's error in one line)."""
    from torch.utils import cpp_extension

    try:
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        if needs_build(build_dir, name):  # said once: _build is cached
            log.warning("building the C++ LIF kernel (once per machine; about a minute; cached "
                        "in %s)", build_dir)
        return cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            # no fused multiply-add (exact membranes); -fno-trapping-math lets GCC turn the
            # kernels' comparisons into vector selects (floating-point exception flags only: no
            # value changes)
            extra_cflags=["-O3", "-ffp-contract=off", "-fno-trapping-math", *arch_flags],
            verbose=False,
        ), None
    except Exception as exc:  # no compiler, no ninja, no headers: report, let "auto" fall back
        last = (str(exc).strip().splitlines() or [""])[-1]
        return None, f"{type(exc).__name__}: {last}"


def available() -> bool:
    return _build()[0] is not None


def extension():
    ext, error = _build()
    if ext is None:
        raise SpikeguideError(
            f"the 'compiled' LIF backend could not build its C++ extension ({error}); install a C++ "
            "compiler and ninja, or use backend='fused' or 'torch'"
        )
    return ext


class CppLoops:
    """Both loops in one C++ pass each over ``[T, N]``, parallel over neurons; outputs come from
    ``pool`` (a :class:`~.pool.BufferPool`)."""

    def __init__(self, pool):
        self.pool = pool

    def _empty(self, like: torch.Tensor) -> torch.Tensor:
        return self.pool.empty(tuple(like.shape), like.dtype)

    def forward(self, current, decay, threshold, soft, save_h):
        spikes = self._empty(current)
        h = self._empty(current) if save_h else None
        below, above = threshold_neighbours(threshold, current.dtype)
        extension().forward(current, spikes, h, decay, threshold, below, above, soft)
        return spikes, h

    def backward(self, grad_spikes, h, decay, threshold, soft, detach, surrogate: Surrogate,
                 want_decay):
        sid = SURROGATE_IDS.get(type(surrogate), -1)
        pre = surrogate.derivative(h - threshold) if sid < 0 else None
        grad = self._empty(h)
        grad_decay = extension().backward(grad_spikes, h, pre, grad, decay, threshold, soft, detach,
                                          sid, surrogate.width, want_decay)
        return grad, grad_decay
