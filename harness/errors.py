"""Errors the entrypoint turns into one readable line and an exit status."""


class HarnessError(Exception):
    """A problem the user can fix; `run.py` prints the message, no traceback."""

    exit_code = 1


class UsageError(HarnessError):
    """A bad flag value or combination, detected before any work starts."""

    exit_code = 2


class RunInterrupted(HarnessError):
    """Training stopped on a signal after checkpointing; `run.py` says how to resume."""

    def __init__(self, message: str, exit_code: int, run_name: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.run_name = run_name
