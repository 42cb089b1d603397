"""Rate-based backpropagation: training whose memory and backward cost do not grow with T.

See ``docs/ratebp.md`` for the method and the derivation of the eligibility traces.
"""

from .eligibility import record_neuron
from .passes import rate_forward
from .recorder import RateRecorder

__all__ = ["RateRecorder", "rate_forward", "record_neuron"]
