"""spikeguide: train accurate spiking neural networks under the guidance of ANNs."""

from .errors import SpikeguideError
from .models import create_model
from .neuron import IF, LIF, PLIF, get_surrogate

__version__ = "0.1.0"
__all__ = ["IF", "LIF", "PLIF", "SpikeguideError", "create_model", "get_surrogate", "__version__"]
