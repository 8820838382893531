"""Errors the entrypoint turns into one readable line and an exit status."""


class HarnessError(Exception):
    """A problem the user can fix; `run.py` prints the message, no traceback."""

    exit_code = 1


class UsageError(HarnessError):
    """A bad flag value or combination, detected before any work starts."""

    exit_code = 2


class RunInterrupted(HarnessError):
    """Training stopped with a checkpoint to resume from; `run.py` says how to resume.

    `failed`: it stopped on an error (e.g. a full disk), not on the user's signal.
    """

    def __init__(self, message: str, exit_code: int, run_name: str, failed: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.run_name = run_name
        self.failed = failed


class UserCodeError(HarnessError):
    """The user's own code (a `--model` builder) raised: `run.py` prints the frames
    of that code, then the one line. Exit status 1: the flags are fine, the code
    they name failed, and no flag fixes it."""

    def __init__(self, message: str, user_traceback: str) -> None:
        super().__init__(message)
        self.user_traceback = user_traceback
