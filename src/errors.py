"""The exception that `main.py` prints as one line instead of a traceback."""

__all__ = ["UserError"]


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""
