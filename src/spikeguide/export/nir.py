"""Export a trained SNN to NIR (the Neuromorphic Intermediate Representation, ``pip install nir``).

Batch norm is folded into the convolution before it (its running statistics, as in eval mode),
so the graph holds only ``Conv2d`` (with bias), ``Affine``, ``AvgPool2d``, ``Flatten`` and neuron
nodes. A residual addition is two edges into the same neuron node (NIR sums a node's inputs).

Each neuron supplies its own node (``nir_node(dt)``, see :class:`spikeguide.neurons.SpikingNeuron`);
a neuron without one is refused. The LIF family maps to NIR's continuous-time models under
forward-Euler steps of ``dt``: spikeguide's ``u_t = decay * u_{t-1} + I_t`` is NIR's
``tau du/dt = -u + r I`` with ``tau = dt / (1 - decay)`` and ``r = tau / dt`` (so
``dt / tau * r = 1``), ``v_leak = 0``; IF (decay 1) is NIR's ``IF`` with ``r = 1``. Only the hard
reset (to 0) exists in NIR. The graph's output is the classifier's output at every time step; the
model's logits are its mean over time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SpikeguideError
from ..models import SpikingNet
from ..models.attention import SpikeAttention
from ..models.base import in_mode
from ..models.layers import TimeSequential
from ..neurons import SpikingNeuron, is_spiking, missing_piece


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else w.new_zeros(w.shape[0])
    if bn is None:
        return w.clone(), b.clone()
    if not bn.track_running_stats or bn.running_var is None:
        raise SpikeguideError(f"cannot fold {bn}: it keeps no running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach()
    shift = -bn.running_mean * scale + (bn.bias.detach() if bn.affine else 0)
    return w * scale.view(-1, 1, 1, 1), b * scale + shift


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy().astype(np.float32)


class _Builder:
    def __init__(self, shapes: dict[str, tuple[int, ...]], dt: float):
        import nir

        self.nir = nir
        self.shapes = shapes  # module name -> input shape per image and step
        self.dt = dt
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []

    def add(self, name: str, node, sources: list[str]) -> list[str]:
        self.nodes[name] = node
        self.edges += [(s, name) for s in sources]
        return [name]

    def neuron(self, name: str, m: SpikingNeuron, sources):
        why = missing_piece(type(m), "nir_node")
        if why:
            raise SpikeguideError(f"{name}: the neuron {type(m).__name__} has no NIR node ({why}); "
                                  "NIR export needs one (docs/extending.md, 'A neuron')")
        try:
            kind, params = m.nir_node(self.dt)
        except SpikeguideError as e:
            raise SpikeguideError(f"{name}: {e}") from None
        node_type = getattr(self.nir, kind, None)
        if not isinstance(node_type, type):
            raise SpikeguideError(f"{name}: {type(m).__name__}.nir_node names {kind!r}, which is "
                                  "not a node type of the nir package")
        shape = self.shapes[name]
        arrays = {k: np.broadcast_to(np.asarray(v, dtype=np.float32), shape).copy()
                  for k, v in params.items()}
        return self.add(name, node_type(**arrays), sources)

    def conv(self, name: str, conv: nn.Conv2d, bn, sources):
        if conv.padding_mode != "zeros":
            raise SpikeguideError(f"{name}: NIR convolutions pad with zeros only")
        w, b = fold_batchnorm(conv, bn)
        node = self.nir.Conv2d(input_shape=tuple(self.shapes[name][1:]), weight=_np(w),
                               stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                               groups=conv.groups, bias=_np(b))
        return self.add(name, node, sources)

    def emit(self, name: str, m: nn.Module, sources: list[str]) -> list[str]:
        """Add ``m`` fed by the sum of ``sources``; return the nodes whose sum is its output."""
        prefix = f"{name}." if name else ""
        if is_spiking(m):
            return self.neuron(name, m, sources)
        if isinstance(m, (nn.Sequential, TimeSequential)):
            children = list(m.named_children())
            i = 0
            while i < len(children):
                child_name, child = children[i]
                nxt = children[i + 1][1] if i + 1 < len(children) else None
                if isinstance(child, nn.Conv2d):
                    bn = nxt if isinstance(nxt, nn.BatchNorm2d) else None
                    sources = self.conv(prefix + child_name, child, bn, sources)
                    i += 2 if bn is not None else 1
                    continue
                sources = self.emit(prefix + child_name, child, sources)
                i += 1
            return sources
        if all(hasattr(m, a) for a in ("residual", "shortcut", "act")):  # residual blocks
            branch = self.emit(prefix + "residual", m.residual, sources)
            skip = sources if isinstance(m.shortcut, nn.Identity) else \
                self.emit(prefix + "shortcut", m.shortcut, sources)
            return self.emit(prefix + "act", m.act, branch + skip)
        if isinstance(m, nn.Identity):
            return sources
        if isinstance(m, nn.Linear):
            bias = m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
            return self.add(name, self.nir.Affine(weight=_np(m.weight), bias=_np(bias)), sources)
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            kernel, stride, padding = self._pool_geometry(name, m)
            node = self.nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride),
                                      padding=np.array(padding))
            return self.add(name, node, sources)
        if isinstance(m, nn.Flatten):
            shape = self.shapes[name]
            node = self.nir.Flatten(input_type={"input": np.array(shape)}, start_dim=m.start_dim - 1,
                                    end_dim=m.end_dim if m.end_dim < 0 else m.end_dim - 1)
            return self.add(name, node, sources)
        raise SpikeguideError(
            f"{name or 'model'}: {type(m).__name__} has no NIR counterpart (exportable: Conv2d with "
            "BatchNorm2d, Linear, AvgPool2d, AdaptiveAvgPool2d, Flatten, neurons with a NIR node; "
            "RepAct's ReLU is not)"
        )

    def _pool_geometry(self, name, m):
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        if isinstance(m, nn.AvgPool2d):
            if m.ceil_mode or (any(pair(m.padding)) and not m.count_include_pad):
                raise SpikeguideError(f"{name}: NIR's AvgPool2d has no ceil_mode/count_include_pad")
            return pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
        h, w = self.shapes[name][1:]
        oh, ow = pair(m.output_size)
        if h % oh or w % ow:
            raise SpikeguideError(f"{name}: adaptive pooling of {h}x{w} to {oh}x{ow} is not a fixed "
                                  "average pool")
        return (h // oh, w // ow), (h // oh, w // ow), (0, 0)


@torch.no_grad()
def _input_shapes(model: SpikingNet, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Per-image input shape of every module, from one forward pass at T = 1."""
    shapes, handles = {}, []
    for name, m in model.named_modules():
        def hook(mod, inputs, _name=name):
            x = inputs[0]  # [B, ...] for the encoder and folded layers, [T, B, ...] for neurons
            shapes[_name] = tuple(x.shape[2:] if is_spiking(mod) else x.shape[1:])
        handles.append(m.register_forward_pre_hook(hook))
    T = model.T
    try:
        model.T = 1
        with in_mode(model, training=False):
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.T = T
        for h in handles:
            h.remove()
    return shapes


def to_nir(model: SpikingNet, input_shape: tuple[int, ...] = (3, 32, 32), dt: float = 1.0):
    """The NIR graph (``nir.NIRGraph``) of a spikeguide SNN, batch norm folded into the convs.

    ``input_shape`` is one image ``(C, H, W)``: it fixes the shapes of the neuron parameters.
    """
    if not isinstance(model, SpikingNet) or not model.spiking:
        raise SpikeguideError("NIR export needs a spiking spikeguide model (create_model(..., spiking=True))")
    for name, m in model.named_modules():
        if isinstance(m, SpikeAttention):
            raise SpikeguideError(f"{name}: NIR has no primitive for {type(m).__name__}'s product of "
                                  "two spike tensors; spiking transformers cannot be exported to NIR")
    try:
        import nir
    except ImportError:
        raise SpikeguideError("NIR export needs the nir package: pip install nir") from None
    b = _Builder(_input_shapes(model, tuple(input_shape)), dt)
    b.nodes["input"] = nir.Input(input_type=np.array(input_shape))
    out = ["input"]
    for part in ("encoder", "stem", "stages", "pool", "classifier"):
        module = getattr(model, part)
        if isinstance(module, nn.ModuleList):
            module = nn.Sequential(*module)  # child names "0", "1", ... as in the model
        out = b.emit(part, module, out)
    b.nodes["output"] = nir.Output(output_type=np.array([model.num_classes]))
    b.edges += [(s, "output") for s in out]
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata={"dt": dt, "T": model.T})


def export_nir(model: SpikingNet, path: str | Path, input_shape: tuple[int, ...] = (3, 32, 32),
               dt: float = 1.0):
    """Write the model's NIR graph to ``path`` (HDF5) and return the graph."""
    import nir

    graph = to_nir(model, input_shape, dt)
    nir.write(str(path), graph)
    return graph
