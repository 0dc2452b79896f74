"""How the program's messages look in the terminal: conf/config.yaml makes this the console's formatter."""

import logging

from typing_extensions import override

__all__ = ["ConsoleFormatter"]


class ConsoleFormatter(logging.Formatter):
    """Plain messages for the run's progress (INFO); any other level names itself, as in
    `WARNING: the cache ... is damaged`, so that a warning stands out without a timestamp on every line."""

    @override
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname}: {message}"
