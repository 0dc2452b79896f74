"""The exceptions of problems that end a run with one line instead of a traceback (`src.common.exits` prints
them)."""

__all__ = ["RunFailedError", "UserError"]


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class RunFailedError(Exception):
    """A run that started and could not finish, such as training whose loss stopped being a number. In a
    multirun, the job fails (a sweeper records a failed trial) and the others go on."""
