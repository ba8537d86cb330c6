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
