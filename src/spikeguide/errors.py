"""The exception types users see.

Bad configs, missing or corrupt data and incompatible checkpoints raise :class:`SpikeguideError`
with a message that says what was wrong and what to do. The CLI prints it on one line and exits
with code 2; everything else is a bug and keeps its traceback. A run that a signal stopped inside
a larger job (a teacher trained first, an ablation cell) raises :class:`TrainingStopped`, so that
nothing goes on with a half-trained run; the CLI exits with 128 + the signal's number.
"""


class SpikeguideError(Exception):
    """A user-facing error: the message names the problem and the remedy."""


class TrainingStopped(SpikeguideError):
    """A signal stopped a run after it wrote its checkpoint; the same command resumes it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message, signum)  # both in args, so that it survives pickling

    def __str__(self) -> str:
        return self.args[0]

    @property
    def signum(self) -> int:
        return self.args[1]
