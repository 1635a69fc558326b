"""The project's own error types: every refusal names the field, the value seen and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(key: object, known: Iterable[str]) -> str:
    """The hint an unknown key's refusal opens with: `"did you mean layer? "`, or nothing when no known key is close.
    One rule for every table a user writes (a task file's, a run config's)."""
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


class PythiaSweepError(Exception):
    """Base class: anything the user can fix by changing their input or environment."""


class ConfigError(PythiaSweepError, ValueError):
    """A configuration field has a value that is not allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is not valid: {allowed}")

    def __reduce__(self):  # pickled across Ray processes with its fields, not its message
        return (type(self), (self.field, self.value, self.allowed))


class RevisionNotPublished(PythiaSweepError, LookupError):
    """A checkpoint revision the model repo does not publish."""


class HubUnreachable(PythiaSweepError, ConnectionError):
    """The Hugging Face Hub cannot be reached and the local cache cannot answer instead."""


class UnsupportedModel(PythiaSweepError, TypeError):
    """A model whose architecture has no known attention-output projection, or whose generation config
    asks for more than plain greedy decoding."""


class CorruptCheckpoint(PythiaSweepError, OSError):
    """A weight file whose content does not match the hash the Hub published for it."""


class DiskFull(PythiaSweepError, OSError):
    """Not enough disk space for a checkpoint's weights."""


class DiscoveryFailed(PythiaSweepError, RuntimeError):
    """The first pass that finds a task's `{ discover = N }` heads could not run (its checkpoint could not be
    fetched or loaded): no checkpoint of the sweep can be measured without them."""


class NonFiniteNumbers(ArithmeticError):
    """A NaN or an infinity where a record's number comes from (logits, answer log-probabilities, a head map, attention
    evidence): the batch fails, loudly, rather than writing it. Not a setting the user got wrong: the checkpoint is
    measured again in a wider dtype (checkpoint_run.WIDER), and fails only where float32 gives one too."""
