"""The exceptions that end a run with one line instead of a traceback, and the one place that prints them."""

import functools
import sys
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

__all__ = ["RunFailedError", "UserError", "exit_on_user_error", "exit_with_error", "one_line_errors"]

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class RunFailedError(Exception):
    """A run that started and could not finish, such as training whose loss stopped being a number. In a
    multirun, the job fails (a sweeper records a failed trial) and the others go on."""


def exit_with_error(message: str) -> NoReturn:
    """End the program with `Error: <message>` and exit code 1."""
    sys.exit(f"Error: {message}")


@contextmanager
def exit_on_user_error() -> Generator[None]:
    """Turn a UserError into `Error: <message>` and exit code 1, where Hydra would print a traceback (the
    task function; callbacks and sweepers, which Hydra calls outside any job)."""
    try:
        yield
    except UserError as error:
        exit_with_error(str(error))


def one_line_errors(task_function: Callable[[T], float]) -> Callable[[T], float]:
    """Decorate Hydra's task function so that its errors end the program with one line: a UserError (a refused
    run) at once, also in a multirun, which it stops; a RunFailedError only in a single run. In a multirun
    that one fails the job alone: Hydra records it, and the sweep goes on (its summary says how it ended)."""

    @functools.wraps(task_function)  # Hydra finds the task function's module, and so conf/, through this
    def task(cfg: T) -> float:
        with exit_on_user_error():
            try:
                return task_function(cfg)
            except RunFailedError as error:
                if HydraConfig.get().mode is RunMode.MULTIRUN:
                    raise
                raise UserError(str(error)) from None

    return task
