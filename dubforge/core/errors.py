"""Errors a user can act on. The CLI prints them and exits 2; nothing else is written."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class InputError(Exception):
    """One or more problems with user input (manifest, media, scripts)."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StageError(Exception):
    """A stage failed on valid input (a backend crashed, a model is missing...)."""


class TransientError(StageError):
    """A stage failed for a reason that may pass (a network error, a busy or restarting server): worth a retry."""


class RunError(Exception):
    """The run as a whole cannot go on (its OUT is locked by another run, a project file moved, shared storage
    failed...). The CLI prints the message as one line and exits 1."""
