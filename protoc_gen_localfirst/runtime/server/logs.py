"""Default logging for ``serve()``: its lines show up even when the program configured none.

Python drops INFO records when no handler is configured, and a server that
prints nothing leaves its operator guessing (is it up? on which port? as
which node?). So ``serve()`` calls ``install_default_logging()``: if the root
logger has no handlers and the ``protoc_gen_localfirst`` logger has none
either, a plain stderr handler goes on that logger at INFO (uvicorn and
gunicorn do the same). A program that configured logging (``basicConfig``,
``dictConfig``, any root handler) is left alone. If the program configures
the root logger later, the default handler steps aside at its next record,
so nothing is printed twice.

``start_server()`` (tests, embedding) installs nothing.
"""

from __future__ import annotations

import logging

__all__ = ["DEFAULT_FORMAT", "LOGGER_NAME", "DefaultHandler", "install_default_logging"]

LOGGER_NAME = "protoc_gen_localfirst"
DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DefaultHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler ``install_default_logging`` adds; retires once root has handlers."""

    def __init__(self, previous_level: int) -> None:
        super().__init__()  # sys.stderr
        self.previous_level = previous_level
        self.setFormatter(logging.Formatter(DEFAULT_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:  # the program configured logging after all
            self.retire()
            return
        super().emit(record)

    def retire(self) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        logger.removeHandler(self)
        if logger.level == logging.INFO:
            logger.setLevel(self.previous_level)


def install_default_logging() -> DefaultHandler | None:
    """Add the default handler unless logging is configured; return it (None: not added).

    Idempotent: a second call finds the first handler and adds nothing. A level
    the program set on the ``protoc_gen_localfirst`` logger is kept.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if logging.getLogger().handlers or logger.handlers:
        return None
    handler = DefaultHandler(logger.level)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return handler
