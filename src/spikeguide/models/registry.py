"""The model registry and ``create_model``."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from ..errors import SpikeguideError
from ..neurons import Surrogate, get_surrogate, is_spiking, neuron_factory
from ..neurons.fuse_bn import set_fuse_bn
from ..registry import Registry
from .base import SpikingNet

MODELS: Registry[Callable[..., SpikingNet]] = Registry("model")
register_model = MODELS.register


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    spiking: bool = True,
    T: int = 4,
    neuron: str = "lif",
    neuron_options: dict[str, Any] | None = None,
    surrogate: str | Surrogate = "atan",
    surrogate_width: float | None = None,
    repact: bool = False,
    width: float = 1.0,
    fuse_bn: str | bool = "auto",
    **options: Any,
) -> SpikingNet:
    """Build a registered model as an SNN (``spiking=True``) or its ANN twin.

    Args:
        name: a registered model (``MODELS.names()``).
        num_classes, in_channels: classifier outputs and input channels.
        spiking: spiking neurons (SNN) or ReLU (ANN); both have the same parameter names.
        T: time steps for static input (frame input brings its own T); ignored by the ANN.
        neuron: a registered neuron (``NEURONS.names()``: ``lif``, ``if``, ``plif``, ...);
            ``neuron_options`` are its constructor arguments (for the LIF family: decay,
            threshold, reset, detach_reset, backend).
        surrogate, surrogate_width: the surrogate gradient and its width.
        repact: replace the SNN's last spiking activation (the one producing the output feature)
            by ReLU (EnOF's RepAct). No effect on an ANN.
        width: multiplies every channel count.
        fuse_bn: ``"auto"``, ``"true"`` or ``"false"``: whether a batch norm before a neuron runs
            fused with it (:mod:`spikeguide.neurons.fuse_bn`).
        options: model-specific arguments, e.g. ``stem="cifar"`` for resnet18/34/50 or
            ``input_size=128`` for vggsnn.
    """
    builder = MODELS.get(name)
    if not width > 0:
        raise SpikeguideError(f"model width must be positive, got {width}")
    if num_classes < 1 or in_channels < 1:
        raise SpikeguideError("num_classes and in_channels must be >= 1")
    unknown = set(options) - set(inspect.signature(builder).parameters)
    if unknown:
        raise SpikeguideError(f"model {name!r} has no option(s) {sorted(unknown)}")
    if spiking:
        make_act = neuron_factory(neuron, neuron_options, get_surrogate(surrogate, surrogate_width))
    else:
        make_act = nn.ReLU
    model = builder(num_classes=num_classes, in_channels=in_channels, make_act=make_act,
                    width=width, T=T, spiking=spiking, **options)
    if spiking and repact:
        apply_repact(model)
    set_fuse_bn(model, fuse_bn)
    return model


def apply_repact(model: SpikingNet) -> None:
    """EnOF's RepAct: the last spiking neuron before pooling becomes a ReLU."""
    name, _ = model.neurons()[-1]
    model.set_submodule(name, nn.ReLU())


def checked_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                    twin: bool = False) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` (weights from ``source``) that ``model`` loads.

    Every parameter and buffer must match by name and shape; anything else is an error naming the
    key and ``source``. With ``twin`` (an ANN's weights into its SNN, or back), neuron parameters
    that only one side has (a PLIF's learnable decay) are left out instead.
    """
    own = model.state_dict()
    modules = dict(model.named_modules())

    def neuron_own(key: str) -> bool:
        """The key belongs to a neuron here, or to the neuron whose place ReLU takes in an ANN."""
        module = modules.get(key.rpartition(".")[0])
        return is_spiking(module) or isinstance(module, nn.ReLU)

    only_state = [k for k in state_dict if k not in own]
    skipped = [k for k in only_state if twin and neuron_own(k)]
    unmatched = ([k for k in own if k not in state_dict and not (twin and neuron_own(k))]
                 + [k for k in only_state if k not in skipped])
    if unmatched:
        raise SpikeguideError(f"{source} holds weights of another architecture: {unmatched[0]!r} "
                              f"is in only one of them ({len(unmatched)} keys differ)")
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            raise SpikeguideError(
                f"{source} does not fit this model: {key} has shape {tuple(value.shape)}, the "
                f"model needs {tuple(own[key].shape)} (another width or class count?)")
    return {k: v for k, v in state_dict.items() if k not in skipped}


def load_twin_weights(model: nn.Module, state_dict: dict[str, torch.Tensor],
                      source: str = "the twin's weights") -> None:
    """Load a twin's weights (an ANN into its SNN, or back); see :func:`checked_weights`."""
    model.load_state_dict(checked_weights(model, state_dict, source, twin=True), strict=False)
