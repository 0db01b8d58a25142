"""The text log format: one call's fields as key=value, none of them forgeable by a client."""

from __future__ import annotations

import io
import logging
import shlex

from service.observability.logs import ACCESS, configure_logging, text_field


def test_a_value_with_spaces_cannot_forge_fields() -> None:
    """A client's request id holding ` status=200 peer=...` stays one quoted value; plain
    values are written as they are."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "text", stream)
        forged = "abc status=200 reason=OK peer=10.9.9.9"
        ACCESS.info(
            "call",
            extra={"status": "401", "request_id": forged, "peer": "ipv4:127.0.0.1:5"},
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = stream.getvalue().strip()
    fields = [t.split("=", 1) for t in shlex.split(line.partition(": call ")[2])]
    assert fields == [["status", "401"], ["request_id", forged], ["peer", "ipv4:127.0.0.1:5"]]


def test_text_field_quotes_only_what_needs_it() -> None:
    """Quotes, `=`, backslashes, spaces and unprintables are escaped as JSON writes them."""
    assert text_field("billing-7f3a") == "billing-7f3a"
    assert text_field("a b") == '"a b"'
    assert text_field('a"b') == '"a\\"b"'
    assert text_field("x=y") == '"x=y"'
    assert text_field("line\nbreak") == '"line\\nbreak"'
