"""Logging for the bot process. The token must never reach a log line: besides never logging
it, a filter masks it in every record, whatever library formats it (a URL in an exception…)."""

from __future__ import annotations

import logging
import sys
from typing import Iterable

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        text = message
        for secret in self.secrets:
            text = text.replace(secret, "***")
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            exc_text = record.exc_text
            for secret in self.secrets:
                exc_text = exc_text.replace(secret, "***")
            record.exc_text = exc_text
        if text != message:
            record.msg, record.args = text, None
        return True


def configure_logging(level: str = "INFO", *, secrets: Iterable[str] = (), stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_castfinder", False)]:
        root.removeHandler(old)
    handler._castfinder = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Per-request chatter from aiogram's event loop is noise at INFO.
    logging.getLogger("aiogram.event").setLevel(max(root.level, logging.WARNING))
    return handler
