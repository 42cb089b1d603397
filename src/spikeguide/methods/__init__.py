"""Training methods, one module each; ``METHODS`` maps names to classes."""

from . import ann, bptt, enof, hybrid, kd, ratebp  # noqa: F401  (registers the methods)
from .base import METHODS, Method, NoOptions, StepResult, register_method
from .options import DistillOptions, LAFOptions, OptionGroup, RateOptions

__all__ = ["METHODS", "DistillOptions", "LAFOptions", "Method", "NoOptions", "OptionGroup",
           "RateOptions", "StepResult", "register_method"]
