"""The one exception type of the input/output layer."""

from __future__ import annotations

import os

__all__ = ["CaseError"]


class CaseError(ValueError):
    """A problem with one case that the user can fix: names the file (or series folder) and what is wrong.

    The predictor records it in the manifest as the case's reason and goes on with the next case.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
