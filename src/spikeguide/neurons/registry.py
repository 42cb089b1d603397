"""The neuron registry: ``[neuron] kind`` names a registered :class:`SpikingNeuron` subclass, and
the rest of ``[neuron]`` (its options) are its constructor's arguments."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from ..errors import SpikeguideError
from ..registry import Registry
from .base import SpikingNeuron
from .surrogates import Surrogate

NEURONS: Registry[type[SpikingNeuron]] = Registry("neuron")
# constructor arguments that come from the [surrogate] table, not from the neuron's options
SURROGATE_ARGUMENTS = ("surrogate", "width")


def register_neuron(name: str) -> Callable[[type[SpikingNeuron]], type[SpikingNeuron]]:
    """Class decorator: register a :class:`SpikingNeuron` subclass as ``[neuron] kind = name``."""
    def decorator(cls: type[SpikingNeuron]) -> type[SpikingNeuron]:
        if not (isinstance(cls, type) and issubclass(cls, SpikingNeuron)):
            raise TypeError(f"register_neuron({name!r}) needs a SpikingNeuron subclass, got {cls!r}")
        return NEURONS.register(name)(cls)
    return decorator


def neuron_options(kind: str) -> dict[str, Any]:
    """The options of a registered neuron: its constructor's arguments (except the surrogate's)
    with their defaults (``inspect.Parameter.empty`` where there is none)."""
    params = inspect.signature(NEURONS.get(kind)).parameters.values()
    return {p.name: p.default for p in params if p.name not in SURROGATE_ARGUMENTS
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def neuron_factory(kind: str, options: dict[str, Any] | None,
                   surrogate: Surrogate) -> Callable[[], SpikingNeuron]:
    """A builder of neuron layers ``kind`` with ``options`` and ``surrogate``; an option the
    neuron does not take is a one-line error listing those it takes. Values are checked by the
    neuron's own constructor, the first time the builder runs."""
    options = dict(options or {})
    allowed = neuron_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SpikeguideError(f"neuron {kind!r} has no option(s) {unknown}; its options: "
                              f"{', '.join(allowed)} (the surrogate is set in [surrogate])")
    return functools.partial(NEURONS.get(kind), surrogate=surrogate, **options)
