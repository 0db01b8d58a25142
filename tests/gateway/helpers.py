"""Helpers for the gateway tests."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp


def basic_auth(username: str, password: str) -> dict[str, str]:
    """An Authorization header with Basic credentials (UTF-8, RFC 7617)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def json_of(response: aiohttp.ClientResponse) -> Any:
    """The body, after checking that it is JSON."""
    assert response.content_type == "application/json", await response.text()
    return await response.json()
