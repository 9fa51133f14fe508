"""Structured JSON logs on stderr, with tracebacks that never carry local variables.

structlog's defaults render exceptions with the values of local variables (rich tracebacks or
ExceptionDictTransformer(show_locals=True)); a request body or a just-issued secret can sit in a
local, so keyplane always renders exceptions as plain text frames instead.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: int = logging.INFO) -> None:
    """Configure structlog once per process: JSON lines on stderr, ISO UTC timestamps,
    exceptions as plain traceback text (no locals). Later calls are no-ops."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # sys.stderr is looked up per logger, so redirections made later (tests, daemons) hold
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)
