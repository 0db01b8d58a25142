"""The one error the embedded server raises."""

from __future__ import annotations


class EmbeddedPostgresError(Exception):
    """A one-line problem with the embedded server, fit for the CLI to print."""
