"""User-facing errors.

A `SunfishError` carries one line meant for a person: the field or input, the value
given, and what is allowed or what to do. The CLI prints it to stderr and exits with
code 2; notebooks show it as an ordinary exception. Tracebacks are for bugs.
"""

from __future__ import annotations


class SunfishError(Exception):
    """A mistake in user input (config, CLI argument, path, checkpoint) — not a bug."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it one line: the CLI prints str(exc) as-is.
        super().__init__(" ".join(str(message).split()))


class ConfigError(SunfishError, ValueError):
    """An invalid configuration value or combination."""


class DataStreamError(SunfishError):
    """A data source that failed while streaming (retries spent, or an unreadable record).

    Defined here, next to its base, so that every user error is known by name wherever
    `is_user_error_name` is asked (a notebook's exception reaches the CLI only by name).
    """

    def checkpointed(self, where: str) -> "DataStreamError":
        """Add where the training state was saved and how to continue; returns self."""
        self.args = (f"{self.args[0]}; {where}",)
        return self


class Interrupted(SunfishError):
    """A run stopped by SIGINT, SIGTERM or SIGUSR1 after saving what it could (not a mistake).

    The message is the one line to print (what happened, the step saved, the resume command);
    the CLI prints it without the `error:` prefix and exits 128 + the signal's number
    (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1), as a shell does for a killed command.
    `step` is the step last.ckpt holds; `show` is False on the processes that stay quiet (all but rank 0).
    """

    def __init__(self, message: str, signum: int, *, step: int | None = None, exit_code: int | None = None,
                 show: bool = True):
        super().__init__(message)
        self.signum, self.step, self.show = signum, step, show  # step: what last.ckpt holds (None: nothing)
        self.exit_code = 128 + signum if exit_code is None else exit_code


def is_user_error_name(name: str) -> bool:
    """Is `name` the class name of SunfishError or one of its subclasses?

    A notebook cell's exception reaches papermill only by name; this tells a user error
    (exit 2, one line) from a bug or a failed check.
    """
    pending, seen = [SunfishError], set()
    while pending:
        cls = pending.pop()
        seen.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return name in seen
