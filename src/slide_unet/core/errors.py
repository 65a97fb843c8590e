"""Exceptions a user can meet, each with one clear message."""

from __future__ import annotations

import os


class SlideError(ValueError):
    """A slide file that cannot be opened or read.

    The message names the file and says what was expected and what was found.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
