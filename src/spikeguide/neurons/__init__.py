"""The core spiking parts: the neuron contract, surrogate gradients, the LIF family and its fused
kernels. A new neuron subclasses :class:`SpikingNeuron` and registers with
:func:`register_neuron` (docs/extending.md)."""

from .base import RATE_PIECES, NIRNode, SpikingNeuron, is_spiking, missing_piece, reference_loop
from .kernels import LIFSpec
from .lif import IF, LIF, PLIF, RESETS, lif_multistep
from .registry import NEURONS, neuron_factory, neuron_options, register_neuron
from .surrogates import SURROGATES, Surrogate, get_surrogate, spike

__all__ = ["IF", "LIF", "LIFSpec", "NEURONS", "NIRNode", "PLIF", "RATE_PIECES", "RESETS",
           "SURROGATES", "SpikingNeuron", "Surrogate", "get_surrogate", "is_spiking",
           "lif_multistep", "missing_piece", "neuron_factory", "neuron_options", "reference_loop",
           "register_neuron", "spike"]
