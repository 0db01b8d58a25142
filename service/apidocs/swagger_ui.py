"""Swagger UI at `GET /docs`, over the gateway's own `/openapi.json`.

Its files come from the swagger-ui-bundle package (Swagger UI's release, as connexion serves it),
read from the installed wheel: nothing is fetched from a CDN, by the server or the browser. Each
file is an exact path (no directory is served, so no path can escape it). The page and its
initializer are ours: relative URLs, so the page also works behind a proxy under a path prefix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
# Swagger UI draws with inline styles and data: images, and runs only its own scripts.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'"
)
_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>authsvc API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/swagger-ui-standalone-preset.js"></script>
  <script src="docs/swagger-initializer.js"></script>
</body>
</html>
"""
_INITIALIZER = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
    validatorUrl: null,  // no badge fetched from validator.swagger.io
  });
};
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _text(body: str, content_type: str, **headers: str) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=body,
            content_type=content_type,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", **headers},
        )

    return serve


def _file(path: Path, content_type: str) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        # FileResponse streams the file and answers conditional requests (ETag, Last-Modified).
        return web.FileResponse(
            path,
            headers={
                "Content-Type": content_type,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return serve


def swagger_ui_handlers() -> dict[str, Handler]:
    """The page at /docs and each of its files at /docs/NAME, by exact path."""
    root = Path(str(swagger_ui_path))
    return {
        DOCS_PATH: _text(
            _PAGE, "text/html", **{"Content-Security-Policy": CONTENT_SECURITY_POLICY}
        ),
        f"{DOCS_PATH}/swagger-initializer.js": _text(_INITIALIZER, "text/javascript"),
        **{f"{DOCS_PATH}/{name}": _file(root / name, kind) for name, kind in _FILES.items()},
    }
