"""What the start-up log says of the configuration: the settings that differ from the defaults,
and where the database is, never a password or a key."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from service.addresses import safe_dsn
from service.config import Settings

# Settings whose value is a secret: logged as set, never shown.
_SECRET = frozenset({"key_encryption_key"})


def changed_settings(settings: Settings) -> Iterator[str]:
    """`name=value` for each setting that is not its default."""
    defaults = Settings()
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if value == getattr(defaults, field.name):
            continue
        if field.name in _SECRET:
            shown = "(set)"
        elif field.name == "database_url" and isinstance(value, str):
            shown = safe_dsn(value)
        elif value is None:  # a listener or feature turned off with an empty variable
            shown = "off"
        elif isinstance(value, tuple):
            shown = ",".join(str(v) for v in value)
        else:
            shown = str(value)
        yield f"{field.name}={shown}"
