"""Logging set-up: JSON lines (python-json-logger) or text, and the one line per call.

Each gRPC call and each REST request is one line on the `authsvc.access` logger with the same
fields: `transport` (grpc or http), `method` (the RPC's full name, or the route template),
`status` (the gRPC code, or the HTTP status), `reason` (the refusal's ErrorInfo reason),
`duration_ms`, `request_id`, `peer`. A REST request dispatched in process is one line (the
route's), not two. No field ever holds a credential: the route template is logged, never the
path or its query, and no header is.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

ACCESS = logging.getLogger("authsvc.access")
CALL_FIELDS = ("transport", "method", "status", "reason", "duration_ms", "request_id", "peer")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def text_field(text: str) -> str:
    """`text` as one token of a text line: quoted with escapes (as JSON writes it) when it holds
    a space, a quote, `=` or anything not printable, so a typed value (a login's name, a client's
    request id) cannot pass for other fields, another line, or text running the other way."""
    if text and text.isprintable() and not any(ch in text for ch in ' "=\\'):
        return text
    return json.dumps(text)


class _TextFormatter(logging.Formatter):
    """The classic line, then the call's fields as key=value (values as `text_field` writes)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{name}={text_field(str(getattr(record, name)))}"
            for name in CALL_FIELDS
            if getattr(record, name, None) not in (None, "")
        ]
        return f"{line} {' '.join(fields)}" if fields else line


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr) as JSON lines or text."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(_TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Neither format shows where a record was made nor which thread or process made it, so
    # each record is spared collecting them: the stack walk (findCaller), getpid(), the
    # thread's name (the Logging HOWTO's "Optimization" section names these switches). The
    # access line of every call is made on the event loop, beside the login's own work:
    # about 7% of the loop's instructions per login with them, measured by bench/callgrind.py.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # The gateway's own line (`log_http`) replaces aiohttp's access log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log_call(
    transport: str,
    method: str,
    status: str,
    reason: str | None,
    seconds: float,
    request_id: str,
    peer: str,
) -> None:
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "transport": transport,
        "method": method,
        "status": status,
        "reason": reason or "",
        "duration_ms": round(seconds * 1000, 3),
        "request_id": request_id,
        "peer": peer,
    }
    ACCESS.info("%s %s %s", transport, method, status, extra=fields)
