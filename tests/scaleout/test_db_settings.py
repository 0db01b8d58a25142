"""The database settings for poolers: AUTHSVC_DB_STATEMENT_CACHE and AUTHSVC_DB_LISTEN_URL."""

from __future__ import annotations

import pytest

from service.config import ConfigError, load_settings


def test_statement_cache_defaults_to_asyncpg_s_and_takes_zero() -> None:
    """Unset, the statement cache is asyncpg's default (100); 0 (for PgBouncer) is accepted."""
    assert load_settings({}).db_statement_cache == 100
    assert load_settings({"AUTHSVC_DB_STATEMENT_CACHE": "0"}).db_statement_cache == 0


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_bad_statement_cache_names_the_variable(value: str) -> None:
    """A negative or non-integer statement cache stops start-up naming the variable."""
    with pytest.raises(ConfigError, match="AUTHSVC_DB_STATEMENT_CACHE"):
        load_settings({"AUTHSVC_DB_STATEMENT_CACHE": value})


def test_listen_url_is_optional() -> None:
    """Without AUTHSVC_DB_LISTEN_URL the LISTEN uses the database URL (None here); with it, it
    is kept as given."""
    assert load_settings({}).db_listen_url is None
    url = "postgresql://authsvc@127.0.0.1:5000/authsvc"
    assert load_settings({"AUTHSVC_DB_LISTEN_URL": url}).db_listen_url == url
