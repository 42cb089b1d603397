"""spikeguide: train accurate spiking neural networks under the guidance of ANNs."""

from .commands.runs import list_models, load_run
from .config import load_config
from .errors import SpikeguideError
from .models import create_model
from .neurons import IF, LIF, PLIF, get_surrogate
from .training.run import train

__version__ = "0.1.0"
__all__ = ["IF", "LIF", "PLIF", "SpikeguideError", "create_model", "get_surrogate",
           "list_models", "load_config", "load_run", "train", "__version__"]
