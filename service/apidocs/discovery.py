"""The discovery documents (OpenID Connect Discovery 1.0, RFC 8414) at their well-known paths.

Only what is true of authsvc: the tokens' `iss` and algorithm, the JWKS and the introspection
endpoint (each where a route serves it), and no OAuth authorization or token endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.gateway.errors import bad_request, json_response
from service.gateway.routes import Route

DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
JWKS_METHOD = "authsvc.v1.TokenService.GetJwks"
INTROSPECTION_METHOD = "authsvc.v1.TokenService.VerifyToken"
# A host name of RFC 1123 labels (an IPv4 address is one too), or an IPv6 address in brackets;
# then an optional port.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"({_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?")


@dataclass(frozen=True)
class Discovery:
    """What the documents say: the tokens' `iss` and algorithm, and the public base URL of the
    absolute `jwks_uri` and `introspection_endpoint` (None: the request's scheme and Host)."""

    issuer: str
    algorithm: str
    public_url: str | None = None
    max_age: int = 3600


def discovery_handlers(
    discovery: Discovery, routes: Sequence[Route]
) -> dict[str, Callable[[web.Request], Awaitable[web.Response]]]:
    """{path: GET handler} of both documents, which are the same."""
    paths = {r.method.full_name: r.path for r in routes if r.http_method in ("GET", "POST")}

    async def document(request: web.Request) -> web.Response:
        base = discovery.public_url
        if base is None:
            host = _HOST.fullmatch(request.host)
            if host is None or len(host[1]) > 253 or not 0 < int(host[2] or 80) <= 65535:
                raise bad_request("the Host header is not a host name or address")
            base = f"{request.scheme}://{request.host}"
        body: dict[str, Any] = {"issuer": discovery.issuer}
        if JWKS_METHOD in paths:
            body["jwks_uri"] = base + paths[JWKS_METHOD]
        if INTROSPECTION_METHOD in paths:
            body["introspection_endpoint"] = base + paths[INTROSPECTION_METHOD]
            body["introspection_endpoint_auth_methods_supported"] = ["none"]
        body["id_token_signing_alg_values_supported"] = [discovery.algorithm]
        cache = f"public, max-age={discovery.max_age}"
        return json_response(body, headers={"Cache-Control": cache})

    return dict.fromkeys(DISCOVERY_PATHS, document)
