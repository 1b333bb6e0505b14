"""Keys never reach the logs: ``api_key=...`` in logged URLs is replaced by ``api_key=[redacted]``.

WebSocket clients that cannot set headers pass their key as ``?api_key=`` (the spec's way), and
uvicorn logs every request's path with its query string — in the access log and in the
"WebSocket ... [accepted]" lines. A filter on those two loggers rewrites the record's arguments
before any handler formats them, whoever configured the handlers (uvicorn, gunicorn, the user).
"""

from __future__ import annotations

import logging
import re
from typing import Final

_KEY_IN_URL: Final = re.compile(r"(?i)(api_key=)[^&\s\"']*")
REDACTED: Final = r"\1[redacted]"
SERVER_LOGGERS: Final = ("uvicorn.access", "uvicorn.error", "gunicorn.access", "gunicorn.error")


def redact(text: str) -> str:
    return _KEY_IN_URL.sub(REDACTED, text) if "api_key=" in text.lower() else text


class RedactAPIKeys(logging.Filter):
    """Rewrites ``api_key=<value>`` in a record's message and string arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


_FILTER: Final = RedactAPIKeys()


def redact_api_keys_in_server_logs() -> None:
    """Install the filter on the server's loggers (idempotent)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
