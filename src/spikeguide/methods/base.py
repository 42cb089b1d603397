"""The method interface: a method owns its training step, the Trainer owns everything else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from ..errors import SpikeguideError
from ..registry import Registry


class StepResult(NamedTuple):
    loss: torch.Tensor
    logits: torch.Tensor  # the student's time-averaged logits [B, K], for training accuracy


@dataclass
class NoOptions:
    """A method without options."""


class Method(nn.Module):
    """Base class of training methods.

    A method wraps the student (the model being trained; the deployable artefact), may hold a
    frozen ``teacher`` and trainable modules of its own (saved in the training checkpoint beside
    the student), and computes the loss of one batch in :meth:`training_step`.

    Class attributes tell the runner what to build:
        ``Options``: the dataclass of the method's config options (the ``[method]`` table).
        ``spiking_student``: whether the student is an SNN (False: the ANN twin).
        ``needs_teacher``: whether a trained ANN teacher must be supplied (for a method that
            needs one only with some options, override :meth:`teacher_needed` instead).
        ``name``: the registered name, set by :func:`register_method`.

    A method that needs a teacher and gets none is refused at construction.
    """

    Options: type = NoOptions
    spiking_student: bool = True
    needs_teacher: bool = False
    name: str = ""

    def __init__(self, student: nn.Module, options: Any = None, *, teacher: nn.Module | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.student = student
        self.options = options if options is not None else self.Options()
        self.label_smoothing = label_smoothing
        if teacher is None and self.teacher_needed(self.options):
            raise SpikeguideError(
                f"method {self.name or type(self).__name__!r} (with these options) learns from an "
                "ANN teacher and got none: set teacher.checkpoint or teacher.recipe (from Python: "
                "pass teacher=, the trained ANN twin of the student)"
            )
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()

    @classmethod
    def teacher_needed(cls, options: Any) -> bool:
        """Whether a run with these options needs the teacher (some methods only for some
        options, e.g. ratebp with a distillation weight)."""
        return cls.needs_teacher

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        if self.teacher is not None:  # a frozen teacher keeps its BN statistics
            self.teacher.eval()
        return self

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def training_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        # the Trainer calls the method (possibly wrapped in DistributedDataParallel, which
        # synchronizes gradients only for work done inside forward)
        return self.training_step(x, y)

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the method's own modules (neither student nor teacher), for checkpoints."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(("student.", "teacher."))}

    def load_own_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load the method's own modules from a checkpoint; one that does not fit them (saved
        with other method options, e.g. other hybrid cuts) is a one-line error."""
        own = self.own_state_dict()
        differ = sorted(own.keys() ^ state.keys()) + sorted(
            k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
        if differ:
            raise SpikeguideError(
                f"the checkpoint's state of method {self.name or type(self).__name__!r} does not "
                f"fit this one ({differ[0]!r} differs): was the run trained with other method "
                "options? Resume with the run's own config.toml")
        self.load_state_dict(state, strict=False)


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a :class:`Method` subclass as ``[method] name = NAME``."""
    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)
    return decorator
