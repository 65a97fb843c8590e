"""Every exception a user can meet, each with one clear message.

A user error (a bad file, a bad value, a resource already in use, a limit
exceeded) is a :class:`UserError`: the command line prints its message on one
line and exits non-zero, the widgets show it as one notification. Anything
else is a bug: it keeps its traceback and asks for a report.

The input errors also derive from :class:`ValueError`, so code that caught
``ValueError`` around this library keeps working.
"""

from __future__ import annotations

import os

__all__ = [
    "InputError",
    "LimitError",
    "MaskError",
    "MaskStoreError",
    "ModelError",
    "SlideError",
    "StoreBusyError",
    "UsageError",
    "UserError",
    "WorkersDiedError",
]


class UserError(Exception):
    """Something the user can put right: the message says what and how."""


class InputError(UserError, ValueError):
    """An input (file, array, argument) that is not what was expected.

    The message says what was expected and what was found.
    """


class SlideError(InputError):
    """A slide file that cannot be opened or read.

    The message names the file and says what was expected and what was found.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MaskError(InputError):
    """A mask file, array or store that cannot be read or written as asked."""


class MaskStoreError(MaskError):
    """A mask store that is damaged, of another version, or not what was asked for."""


class ModelError(InputError):
    """A model or model card that cannot be used.

    The message says what was expected and what was found, and names the file
    when there is one.
    """


class UsageError(InputError):
    """Options that do not fit together or are out of range (the command line's, or an API's)."""


class LimitError(InputError):
    """An input that would need more memory or time than the stated budget.

    The message gives the size asked for, the budget, and the environment
    variable that raises it.
    """


class StoreBusyError(UserError):
    """A mask store that another process is writing.

    Attributes
    ----------
    pid : int or None
        The process holding it, when known.
    """

    def __init__(self, message: str, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


class WorkersDiedError(UserError, RuntimeError):
    """The dask.distributed workers of a run died before it finished."""
