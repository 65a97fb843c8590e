"""Every exception a user can meet, each with one clear message.

A user error (a bad file, a bad value, a resource already in use, a limit
exceeded) is a :class:`UserError`: the command line prints its message on one
line and exits non-zero, the widgets show it as one notification. Anything
else is a bug: it keeps its traceback and asks for a report.

A long computation stops when asked: it takes a ``cancel`` (a
``threading.Event`` or a callable returning True to stop; see
:func:`cancel_check`) and raises :class:`Cancelled`, which is not an error.

The input errors also derive from :class:`ValueError`, so code that caught
``ValueError`` around this library keeps working. The warnings a user may see
(a damaged mask store recovered, a placeholder model) are here too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = [
    "Cancel",
    "Cancelled",
    "InputError",
    "LimitError",
    "MaskError",
    "MaskStoreError",
    "MaskStoreWarning",
    "ModelError",
    "PlaceholderModelWarning",
    "SlideError",
    "StoreBusyError",
    "UsageError",
    "UserError",
    "WorkersDiedError",
    "cancel_check",
]

#: A cancel request: a ``threading.Event``, or a callable that returns True to stop.
Cancel = Callable[[], bool] | threading.Event


class Cancelled(Exception):
    """Raised when a ``cancelled()`` callback asked a long computation to stop."""


def cancel_check(cancel: Cancel | None) -> Callable[[], bool]:
    """``cancel`` (None, a callable or a threading.Event) as a callable returning a bool.

    Raises
    ------
    TypeError
        ``cancel`` is neither.
    """
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event or a callable, got {cancel!r}")


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


# -- warnings: the work goes on, the user is told -----------------------------------


class MaskStoreWarning(UserWarning):
    """A damaged mask store: what was recovered, set aside or lost."""


class PlaceholderModelWarning(UserWarning):
    """An untrained placeholder model was loaded: its output means nothing."""
