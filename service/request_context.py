"""Per-request context that crosses layers without becoming a parameter of every call.

The transport sets the RPC's deadline here; the store bounds every pool acquire and query by it (or
by the database timeout, if shorter), since asyncpg waits forever otherwise. A single statement
already sent when its caller stops waiting runs on within the database timeout alone.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

# The metadata key (and, as X-Request-Id, the HTTP header) carrying a call's request id: the one
# definition, read by the gRPC transport and the gateway.
REQUEST_ID_KEY = "x-request-id"
REQUEST_ID_MAX = 128


def given_request_id(value: object) -> str | None:
    """A caller's request id, if it is one we pass on and log: 1..128 printable ASCII characters
    with no space (so that it cannot pass for other fields of a text log line); else None, and
    the call gets a new one."""
    if not isinstance(value, str) or not 0 < len(value) <= REQUEST_ID_MAX:
        return None
    return value if all("!" <= char <= "~" for char in value) else None


# Absolute deadline on the time.monotonic() clock, or None for "no deadline".
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
request_id: ContextVar[str] = ContextVar("request_id", default="-")


def remaining(cap: float) -> float:
    """Seconds left before the current deadline, never more than `cap`; <= 0 once it has passed."""
    end = deadline.get()
    if end is None:
        return cap
    return min(cap, end - time.monotonic())
