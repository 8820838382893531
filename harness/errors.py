"""Errors the entrypoint turns into one readable line and an exit status."""


class HarnessError(Exception):
    """A problem the user can fix; `run.py` prints the message, no traceback."""

    exit_code = 1


class UsageError(HarnessError):
    """A bad flag value or combination, detected before any work starts."""

    exit_code = 2
