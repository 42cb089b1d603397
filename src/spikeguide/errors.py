"""The one exception type users see.

Bad configs, missing or corrupt data and incompatible checkpoints raise :class:`SpikeguideError`
with a message that says what was wrong and what to do. The CLI prints it on one line and exits
with code 2; everything else is a bug and keeps its traceback.
"""


class SpikeguideError(Exception):
    """A user-facing error: the message names the problem and the remedy."""
