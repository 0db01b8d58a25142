"""Swagger UI at GET /docs: the page, its files from the installed package, nothing else."""

from __future__ import annotations

import re

import aiohttp
import pytest
from swagger_ui_bundle import swagger_ui_path


async def test_the_page_loads_its_files_from_this_server(gateway_url: str) -> None:
    """/docs is an HTML page whose every script and stylesheet is a relative URL this server
    answers 200 with the right type; nothing is fetched from another host."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway_url}/docs") as reply:
            assert reply.status == 200
            assert reply.content_type == "text/html"
            assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
            page = await reply.text()
        links = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert links and not any("//" in link for link in links)
        for link in links:
            async with http.get(f"{gateway_url}/{link}") as asset:
                assert asset.status == 200, link
                assert asset.content_type in ("text/css", "text/javascript", "image/png")
                body = await asset.read()
                assert body


async def test_the_bundle_is_the_packages_file(gateway_url: str) -> None:
    """The Swagger UI bundle served is the installed package's file, byte for byte."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway_url}/docs/swagger-ui-bundle.js") as reply,
    ):
        served = await reply.read()
    assert served == (swagger_ui_path / "swagger-ui-bundle.js").read_bytes()


async def test_the_initializer_points_at_the_openapi_document(gateway_url: str) -> None:
    """The initializer loads openapi.json relative to the page, which the gateway serves."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway_url}/docs/swagger-initializer.js") as reply:
            assert '"openapi.json"' in await reply.text()
        async with http.get(f"{gateway_url}/openapi.json") as reply:
            assert reply.status == 200 and (await reply.json())["paths"]


@pytest.mark.parametrize(
    "path", ["/docs/", "/docs/index.html", "/docs/../pyproject.toml", "/docs/%2e%2e/README.md"]
)
async def test_only_the_listed_files_are_served(gateway_url: str, path: str) -> None:
    """No other path under /docs is served (no directory listing, no way out of it): 404."""
    async with aiohttp.ClientSession() as http, http.get(f"{gateway_url}{path}") as reply:
        assert reply.status == 404
