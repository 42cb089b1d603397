"""Training methods, one module each; ``METHODS`` maps names to classes."""

from . import ann, bptt, enof, hybrid, kd, ratebp  # noqa: F401  (registers the methods)
from .base import METHODS, Method, NoOptions, StepResult, register_method

__all__ = ["METHODS", "Method", "NoOptions", "StepResult", "register_method"]
