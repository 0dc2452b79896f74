"""The exceptions that end a run with one line instead of a traceback."""

import sys
from collections.abc import Generator
from contextlib import contextmanager

__all__ = ["RunFailedError", "UserError", "exit_on_user_error"]


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class RunFailedError(Exception):
    """A run that started and could not finish, such as training whose loss stopped being a number. In a
    multirun, the job fails (a sweeper records a failed trial) and the others go on; main.py prints the
    message as one line."""


@contextmanager
def exit_on_user_error() -> Generator[None]:
    """Turn a UserError into `Error: <message>` and exit code 1, where Hydra would print a traceback
    (main.py's task function; callbacks and sweepers, which Hydra calls outside any job)."""
    try:
        yield
    except UserError as error:
        sys.exit(f"Error: {error}")
