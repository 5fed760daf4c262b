"""Errors of fairseq-qbert: library exceptions, and their one-line form at entry points.

Library code raises a :class:`QBertError` subclass, which a notebook or an API caller can
catch with ``except Exception`` (or ``except ValueError`` for bad configuration). Only the
entry points -- fairseq hooks (architecture functions, ``build_model``,
``upgrade_state_dict_named``, the criterion's constructor) and console scripts -- turn
them into :class:`UsageError`: one line ``fairseq-qbert: error: MESSAGE`` and exit
status 1, through :func:`cli_errors`.
"""
import contextlib
import functools


class QBertError(Exception):
    """Base of every error fairseq-qbert raises on purpose; ``message`` is one line."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class ConfigError(QBertError, ValueError):
    """A flag, option or config value is invalid; the message names it and what is allowed."""


class CheckpointError(QBertError):
    """A checkpoint cannot be used: unreadable, of another shape, bits or kind."""


class DataError(QBertError):
    """An input file or data folder is missing or malformed."""


class UsageError(SystemExit):
    """The command-line form of a :class:`QBertError`: one line, exit status 1.

    A ``SystemExit`` so that ``fairseq-train`` prints just this one line instead of a
    traceback, and so that fairseq's ``Trainer.load_checkpoint`` (which rewraps every
    ``Exception`` as "Cannot load model parameters") cannot hide it. Raised only at entry
    points (see :func:`cli_errors`), never by library code.
    """

    def __init__(self, message: str):
        super().__init__(f"fairseq-qbert: error: {message}")
        self.message = message

    def __str__(self):
        return self.message


@contextlib.contextmanager
def cli_errors(prefix: str = ""):
    """Turn a :class:`QBertError` raised inside the block into a :class:`UsageError`.

    ``prefix`` (e.g. ``"--teacher-path X: "``) is put before the message.
    """
    try:
        yield
    except QBertError as e:
        raise UsageError(prefix + e.message) from None


def entry_point(fn):
    """Decorator form of :func:`cli_errors` for fairseq hooks and console-script mains."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with cli_errors():
            return fn(*args, **kwargs)

    return wrapper
