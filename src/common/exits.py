"""How the program ends on an error: with one line and exit code 1 where the user can fix it (a UserError, an
operating-system error on a path), with its traceback where it is a bug. The one place that prints them, at each
entry point: the task function (`one_line_errors`), Hydra's callbacks and the sweeper (`exit_on_user_error`)."""

import _thread
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from src.common.errors import RunFailedError, UserError
from src.common.os_errors import os_error_line

__all__ = [
    "INTERRUPTED_EXIT_CODE",
    "ctrl_c_exits_quietly",
    "exit_if_ending_on_user_error",
    "exit_on_user_error",
    "exit_with_error",
    "one_line_errors",
    "user_error_line",
]

T = TypeVar("T")
INTERRUPTED_EXIT_CODE = 130  # the exit code of a program stopped by Ctrl-C (128 + SIGINT)
IMPORT_MACHINERY = "<frozen importlib._bootstrap"  # the file name of the frames of Python's imports
RETRY_S = 0.05


@contextmanager
def ctrl_c_exits_quietly() -> Generator[None]:
    """Within this block (main.py's whole program), Ctrl-C stops the program with a KeyboardInterrupt, as in
    any Python program: what runs finishes its `finally` blocks (files written atomically stay old or new,
    training saves its checkpoint), and the program then ends with exit code 130, without a traceback. Not
    in the middle of an import, though (`_interrupt_unless_importing()`)."""
    signal.signal(signal.SIGINT, _interrupt_unless_importing)
    try:
        yield
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT_CODE)
    finally:
        # The program's work is done; Python still ends it (W&B's and others' `atexit` steps): at once.
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(INTERRUPTED_EXIT_CODE))


def _interrupt_unless_importing(signum: int, frame: FrameType | None) -> None:
    """SIGINT's handler: a KeyboardInterrupt, as Python's own handler raises, but not in the middle of an import
    (torch's takes a second), which it can leave half done: numpy then refuses to load again, or the
    interrupt is lost in a library's `except`. There, the signal comes again a moment later."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(IMPORT_MACHINERY):
            retry = threading.Timer(RETRY_S, _thread.interrupt_main)  # as if the signal came again
            retry.daemon = True
            retry.start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def exit_with_error(message: str) -> NoReturn:
    """End the program with `Error: <message>` and exit code 1."""
    sys.exit(f"Error: {message}")


def user_error_line(error: BaseException) -> str | None:
    """The line that says what is wrong, for an error the user can fix: a UserError, or an operating-system
    error on a path (a folder where a file is written, a full disk); None for any other error, a bug, whose
    traceback shows where it is."""
    return str(error) if isinstance(error, UserError) else os_error_line(error)


@contextmanager
def exit_on_user_error() -> Generator[None]:
    """Turn an error the user can fix (`user_error_line()`) into `Error: <line>` and exit code 1, where Hydra
    would print a traceback (the task function; callbacks and sweepers, which Hydra calls outside any job).
    Also a decorator: `@exit_on_user_error()`."""
    try:
        yield
    except Exception as error:
        line = user_error_line(error)
        if line is None:
            raise
        exit_with_error(line)


def exit_if_ending_on_user_error() -> None:
    """Called in a `finally` block (Hydra calls the end hooks of its callbacks in one): exit with one line where
    the error in flight is one the user can fix; else let it go on."""
    ending = sys.exc_info()[1]
    line = None if ending is None else user_error_line(ending)
    if line is not None:
        exit_with_error(line)


def one_line_errors(task_function: Callable[[T], float]) -> Callable[[T], float]:
    """Decorate Hydra's task function so that its errors end the program with one line: an error the user can
    fix (a refused run) at once, also in a multirun, which it stops, but in an Optuna study, where the job's
    trial fails (counted against `max_failure_rate`) and the study goes on; a RunFailedError only in a single
    run. In a multirun that one fails the job alone: Hydra records it, and the sweep goes on (its summary
    says how it ended)."""

    @functools.wraps(task_function)  # Hydra finds the task function's module, and so conf/, through this
    def task(cfg: T) -> float:
        try:
            return task_function(cfg)
        except RunFailedError as error:
            if _in_a_multirun():
                raise
            exit_with_error(str(error))
        except Exception as error:
            line = user_error_line(error)
            if line is None:
                raise
            if _in_a_multirun() and _in_a_study():
                raise RunFailedError(line) from None
            exit_with_error(line)

    return task


def _in_a_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode is RunMode.MULTIRUN


def _in_a_study() -> bool:
    """Whether this job is a trial of an Optuna study, whose sweeper counts a job that fails as a failed trial
    (a search space may hold points that are refused, and the study learns to avoid them)."""
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    from src.common.targets import instantiates

    return instantiates(HydraConfig.get().sweeper, OptunaSweeper)
