"""The core spiking parts: surrogate gradients, multi-step neurons and their fused kernels."""

from .lif import IF, LIF, NEURONS, PLIF, RESETS, is_spiking, lif_multistep
from .surrogates import SURROGATES, Surrogate, get_surrogate, spike

__all__ = ["IF", "LIF", "NEURONS", "PLIF", "RESETS", "SURROGATES", "Surrogate", "get_surrogate",
           "is_spiking", "lif_multistep", "spike"]
