"""Section 2: every neuron backend on the device against the eager ``torch`` reference.

Pass criteria, float32: identical spikes; the input gradient within ``GRAD_ATOL`` of the
reference's at every element; PLIF's decay gradient within ``DECAY_RTOL`` relative of the
reference run in float64. That gradient sums float32 terms over all neurons and steps which
largely cancel, so no implementation meets 1e-5 there: measured against float64 on the 2-core
development machine (AMD EPYC, torch 2.13 CPU build; 8,192 and 32,768 neurons a step, T = 4,
every reset x detach x surrogate, the currents of ``currents`` with seeds 0 to 19), the float32
reference was up to 5.4e-5 off and ``fused`` up to 3.7e-5.

bf16 (T = 4, every reset x surrogate): no NaN or inf; at most ``BF16_SPIKE_SHARE`` of the spikes
differ from the float32 reference run on the same (bf16-rounded) currents; the input gradient's
relative L2 error at most ``BF16_GRAD_REL``, or ``BF16_GRAD_REL_RECTANGLE`` for the rectangle
surrogate, whose jumps at the window's edges turn a rounding of the membrane into a gradient of
0 or 1/width. Measured with ``fused`` on the same machine, seeds 0 to 7 x both resets at 2,048
and 32,768 neurons a step: at most 0.07% of spikes differed; gradient errors reached 0.030
(continuous surrogates) and 0.092 (rectangle).

The rate-BP recording (``record_neuron``), against autograd through the unrolled reference:
spikes identical, counts their sum, eligibility within ``ELIGIBILITY_ATOL``.

Every case draws fresh currents. On CUDA, before each backend call a block of four times the
currents' size is filled with NaN and freed, so the backend's outputs most likely land on NaN
and an element a kernel fails to write shows up as a mismatch.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
import time
from typing import Callable

import torch

from spikeguide.models import create_model
from spikeguide.neurons import LIF, PLIF, SURROGATES, Surrogate, get_surrogate, lif_multistep
from spikeguide.neurons.kernels import resolve_backend
from spikeguide.neurons.kernels.record import fused_record
from spikeguide.ratepass.eligibility import record_eager

from .context import Context
from .results import SectionResult
from .timebox import TimeBox

BACKENDS = ("fused", "triton")  # the fused backends that run on a GPU ("compiled" is CPU only)
GRAD_ATOL = 1e-5
DECAY_RTOL = 1e-4
BF16_SPIKE_SHARE = 0.005
BF16_GRAD_REL = 0.05
BF16_GRAD_REL_RECTANGLE = 0.25
ELIGIBILITY_ATOL = 1e-5


class Cubic(Surrogate):
    """A surrogate no kernel knows: its derivative comes from torch."""

    def derivative(self, x):
        return (1 - (x / self.width).abs()).clamp_min(0) ** 3


def unavailable(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on ``device`` here, or None."""
    if backend != "triton":
        return None
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton runs on CUDA (or in its CPU interpreter, TRITON_INTERPRET=1)"
    return None


def currents(T: int, shape: tuple[int, ...], device: torch.device, seed: int,
             dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Currents around the threshold (both branches of every rule fire) and an upstream gradient."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *shape, generator=gen) * 1.2 + 0.3
    return x.to(device, dtype), torch.randn(T, *shape, generator=gen).to(device, dtype)


def poison(device: torch.device, like: torch.Tensor) -> None:
    """Fill freed device memory with NaN: the next allocations may reuse it."""
    if device.type == "cuda":
        torch.empty(like.numel() * 4, device=device).fill_(float("nan"))


def spikes_and_grads(neuron: torch.nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.detach().requires_grad_()
    s = neuron(x)
    return s, torch.autograd.grad(s, [x, *neuron.parameters()], g)


def compare_fp32(ref: torch.nn.Module, new: torch.nn.Module, x: torch.Tensor, g: torch.Tensor
                 ) -> tuple[bool, str, float]:
    """(passed, detail, input-gradient error) of ``new`` against ``ref`` on ``x``."""
    s_ref, g_ref = spikes_and_grads(ref, x, g)
    poison(x.device, x)
    s_new, g_new = spikes_and_grads(new, x, g)
    differ = int((s_ref != s_new).sum())
    grad_err = (g_new[0] - g_ref[0]).abs().max().item()
    passed = differ == 0 and grad_err <= GRAD_ATOL
    detail = f"{differ} spikes differ, input gradient max |error| {grad_err:.1e}"
    if len(g_ref) > 1:  # PLIF: the decay gradient, against float64
        s64, g64 = spikes_and_grads(copy.deepcopy(ref).double(), x.double(), g.double())
        # a membrane on the threshold can fire in one precision only: then float32 is the reference
        exact = g64[1] if torch.equal(s64, s_ref.double()) else g_ref[1]
        rel = ((g_new[1] - exact).abs() / exact.abs().clamp_min(1e-30)).item()
        passed = passed and rel <= DECAY_RTOL
        detail += f", decay gradient relative error {rel:.1e}"
    return passed, detail, grad_err


class Cases:
    """Runs cases of one unit for one backend and tallies them into a table row."""

    def __init__(self, result: SectionResult, unit: str, backend: str):
        self.result, self.unit, self.backend = result, unit, backend
        self.passed = self.total = 0
        self.worst = 0.0

    def record(self, case: str, passed: bool, detail: str, error: float = 0.0) -> None:
        self.result.check(f"{self.unit}, {self.backend}, {case}", passed, detail)
        self.total += 1
        self.passed += passed
        self.worst = max(self.worst, error)


def neuron_grid(ctx: Context, cls: type[LIF], T: int) -> Callable[[str, Cases], None]:
    """Every reset x detach x built-in surrogate for neuron class ``cls`` at ``T`` steps."""

    def run(backend: str, cases: Cases) -> None:
        combos = itertools.product(("soft", "hard"), (False, True), SURROGATES.names())
        for seed, (reset, detach, surrogate) in enumerate(combos):
            args = (0.6, 0.9, reset, detach, surrogate)
            x, g = currents(T, ctx.sizes.neuron_shape, ctx.device, seed)
            ref = cls(*args, backend="torch").to(ctx.device)
            new = cls(*args, backend=backend).to(ctx.device)
            passed, detail, err = compare_fp32(ref, new, x, g)
            cases.record(f"{reset} reset, detach={detach}, {surrogate}", passed, detail, err)

    return run


def custom_surrogate_and_layouts(ctx: Context) -> Callable[[str, Cases], None]:
    def run(backend: str, cases: Cases) -> None:
        x, g = currents(4, ctx.sizes.neuron_shape, ctx.device, seed=100)
        for reset in ("soft", "hard"):
            ref = PLIF(0.7, reset=reset, surrogate=Cubic(0.8), backend="torch").to(ctx.device)
            new = PLIF(0.7, reset=reset, surrogate=Cubic(0.8), backend=backend).to(ctx.device)
            cases.record(f"PLIF, user-defined surrogate, {reset} reset",
                         *compare_fp32(ref, new, x, g))
        ref, new = LIF(backend="torch"), LIF(backend=backend)
        nhwc = x.flatten(0, 1).to(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
        cases.record("channels_last currents", *compare_fp32(ref, new, nhwc, g))
        static = x[0].expand(*x.shape)  # a static image's encoding, broadcast over T
        cases.record("currents broadcast over T (stride 0)", *compare_fp32(ref, new, static, g))

    return run


def bf16_against_fp32(ctx: Context) -> Callable[[str, Cases], None]:
    def run(backend: str, cases: Cases) -> None:
        for seed, (reset, surrogate) in enumerate(itertools.product(("soft", "hard"),
                                                                    SURROGATES.names())):
            x, g = currents(4, ctx.sizes.neuron_shape, ctx.device, seed + 200, torch.bfloat16)
            ref = LIF(0.5, 1.0, reset, False, surrogate, backend="torch")
            s_ref, (g_ref,) = spikes_and_grads(ref, x.float(), g.float())
            s_new, (g_new,) = spikes_and_grads(LIF(0.5, 1.0, reset, False, surrogate,
                                                   backend=backend), x, g)
            finite = bool(torch.isfinite(s_new).all() and torch.isfinite(g_new).all())
            share = (s_ref != s_new.float()).float().mean().item()
            rel = ((g_new.float() - g_ref).norm() / g_ref.norm()).item()
            limit = BF16_GRAD_REL_RECTANGLE if surrogate == "rectangle" else BF16_GRAD_REL
            passed = finite and share <= BF16_SPIKE_SHARE and rel <= limit
            runs = resolve_backend(backend, x)
            cases.record(f"{reset} reset, {surrogate}", passed,
                         f"runs {runs!r}; finite {finite}; {share:.3%} of spikes differ; input "
                         f"gradient relative error {rel:.2e}", rel)

    return run


def eligibility_reference(current: torch.Tensor, decay: float, reset: str, detach: bool,
                          surrogate: Surrogate) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and ``d mean_t s_t / d delta`` for a shift ``delta`` of every step's current,
    by autograd through the unrolled reference neuron."""
    shift = torch.zeros_like(current[0], requires_grad=True)
    spikes = lif_multistep(current + shift, decay, 1.0, reset, detach, surrogate)
    (eligibility,) = torch.autograd.grad(spikes.mean(0).sum(), shift)
    return spikes.detach(), eligibility


def record(current, decay, reset, detach, surrogate, implementation: str):
    """One recording implementation: ``"eager"`` (the reference loop) or a fused kernel."""
    if implementation == "eager":
        return record_eager(current, decay, 1.0, reset, detach, surrogate)
    return fused_record(current, decay, 1.0, reset, detach, surrogate, implementation)


def recording_implementations(device: torch.device) -> tuple[str, ...]:
    """The eager loop and the device's recording kernel: C++ on CPU, Triton on CUDA (checked
    here whether or not ``record_neuron`` picks it yet: TRITON_RECORD_ON_CUDA)."""
    kernel = "triton" if device.type == "cuda" else "compiled"
    return ("eager", kernel)


def recording(ctx: Context) -> Callable[[str, Cases], None]:
    def run(backend: str, cases: Cases) -> None:
        implementation = backend.removeprefix("record ")
        combos = itertools.product(("soft", "hard"), (False, True), SURROGATES.names(),
                                   (0.2, 0.5, 1.0))
        for seed, (reset, detach, name, decay) in enumerate(combos):
            surrogate = get_surrogate(name)
            current, _ = currents(4, ctx.sizes.neuron_shape, ctx.device, seed + 300)
            s_ref, e_ref = eligibility_reference(current, decay, reset, detach, surrogate)
            poison(ctx.device, current)
            spikes, counts, eligibility = record(current, decay, reset, detach, surrogate,
                                                 implementation)
            err = (eligibility - e_ref).abs().max().item()
            exact = (torch.equal(spikes, s_ref)
                     and torch.equal(counts.to(s_ref.dtype), s_ref.sum(0)))
            cases.record(f"{reset} reset, detach={detach}, {name}, decay {decay}",
                         exact and err <= ELIGIBILITY_ATOL,
                         f"spikes and counts identical: {exact}; eligibility max |error| {err:.1e}",
                         err)

    return run


def model_step(ctx: Context) -> Callable[[str, Cases], None]:
    """A whole PLIF resnet: the same logits and parameter gradients as with the reference neuron
    (float32); a bf16 autocast step without NaN or inf."""
    net_size = ctx.sizes.model_check

    def gradients(backend: str, amp: bool):
        torch.manual_seed(0)
        net = create_model(net_size.model, width=net_size.width, T=net_size.T, neuron="plif",
                           neuron_options={"backend": backend, "decay": 0.6}).to(ctx.device)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(net_size.batch, 3, 32, 32, generator=gen).to(ctx.device)
        y = torch.randint(0, 10, (net_size.batch,), generator=gen).to(ctx.device)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        return logits.detach(), loss.detach(), {n: p.grad for n, p in net.named_parameters()}

    def run(backend: str, cases: Cases) -> None:
        l_ref, _, g_ref = gradients("torch", amp=False)
        l_new, _, g_new = gradients(backend, amp=False)
        worst = max(((g_new[n] - g_ref[n]).abs() - 1e-3 * g_ref[n].abs()).max().item()
                    for n in g_ref)
        same = torch.equal(l_ref, l_new)
        cases.record("float32 step: logits identical, gradients within 1e-5 + 1e-3 |ref|",
                     same and worst <= GRAD_ATOL,
                     f"logits identical: {same}; worst excess over the tolerance {worst:.1e}")
        _, loss, grads = gradients(backend, amp=True)
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(v).all())
                                                    for v in grads.values())
        cases.record("bf16 autocast step: loss and gradients finite", finite,
                     f"loss {loss.item():.4f}, every gradient finite: {finite}")

    return run


def units(ctx: Context) -> list[tuple[str, int, Callable[[str, Cases], None], tuple[str, ...]]]:
    """(name, cases per backend, runner, backends), most important first."""
    recorders = tuple(f"record {i}" for i in recording_implementations(ctx.device))
    return [
        ("LIF float32, T=4, every reset x detach x surrogate", 20, neuron_grid(ctx, LIF, 4),
         BACKENDS),
        ("bf16 against the float32 reference, T=4, every reset x surrogate", 10,
         bf16_against_fp32(ctx), BACKENDS),
        ("rate-BP recording, T=4, every rule x surrogate x decay 0.2/0.5/1", 60, recording(ctx),
         recorders),
        ("PLIF float32 (decay gradient), T=4, every reset x detach x surrogate", 20,
         neuron_grid(ctx, PLIF, 4), BACKENDS),
        ("LIF float32, T=1, every reset x detach x surrogate", 20, neuron_grid(ctx, LIF, 1),
         BACKENDS),
        ("user-defined surrogate; channels_last and broadcast currents", 4,
         custom_surrogate_and_layouts(ctx), BACKENDS),
        (f"whole model ({ctx.sizes.model_check.label()}, PLIF)", 2, model_step(ctx), BACKENDS),
    ]


def run(ctx: Context, box: TimeBox, result: SectionResult) -> None:
    reasons = {b: unavailable(b, ctx.device) for b in BACKENDS}
    if ctx.device.type == "cuda":
        reasons["record triton"] = unavailable("triton", ctx.device)
    for backend, why in reasons.items():
        if why:
            result.note(f"backend {backend!r} not checked: {why}")
    table = result.table(f"Correctness on {ctx.device} (worst error: the input gradient's largest "
                         "|error|; bf16: its relative L2 error; recording: the eligibility's)",
                         ["unit", "backend", "cases passed", "worst error", "seconds"])
    seconds_per_case: dict[str, float] = {}  # until measured, 1 s: Triton compiles at first
    failed: set[str] = set()
    checked: set[str] = set()
    for name, n_cases, runner, backends in units(ctx):
        for backend in backends:
            if reasons.get(backend):
                continue
            if not box.fits(seconds_per_case.get(backend, 1.0) * n_cases, f"{name}, {backend}"):
                continue
            cases = Cases(result, name, backend)
            start = time.monotonic()
            try:
                runner(backend, cases)
            except Exception as err:  # a backend that crashes fails its unit; the others go on
                cases.record("raised", False, f"{type(err).__name__}: {err}")
            spent = time.monotonic() - start
            seconds_per_case[backend] = spent / max(cases.total, 1)
            table.add(name, backend, f"{cases.passed}/{cases.total}", cases.worst, f"{spent:.1f}")
            checked.add(backend)
            if cases.passed < cases.total:
                failed.add(backend)
    result.data["failed"] = sorted(failed)
    result.data["checked"] = sorted(checked)
    result.data["unavailable"] = {b: why for b, why in reasons.items() if why}
