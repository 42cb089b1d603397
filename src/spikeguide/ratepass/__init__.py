"""Rate-based backpropagation: training whose memory and backward cost do not grow with T.

See ``docs/ratebp.md`` for the method and the derivation of the eligibility traces.
"""

from .eligibility import record_dynamics, record_neuron
from .passes import rate_forward
from .recorder import RateRecorder, check_model

__all__ = ["RateRecorder", "check_model", "rate_forward", "record_dynamics", "record_neuron"]
