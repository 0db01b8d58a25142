"""The route table: path templates, the bindings read from the descriptors, generic routing."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from service.gateway.dispatch import ChannelDispatcher
from service.gateway.routes import (
    ErrorStyle,
    Route,
    RouteError,
    build_routes,
    parse_template,
    service_files,
)
from service.gateway.server import serving_gateway
from tests.gateway.helpers import json_of


def test_seed_paths_are_bound_from_the_protos() -> None:
    """The authsvc.v1 descriptors give the seeds' routes, methods and error styles."""
    table = {(r.http_method, r.template.text): r for r in build_routes(service_files())}
    expected = {
        ("POST", "/v1/users/authorize"): (
            "authsvc.v1.AuthService.Authorize",
            ErrorStyle.ERROR_CODE,
        ),
        ("PUT", "/v1/users/password"): (
            "authsvc.v1.PasswordService.ReplacePasswords",
            ErrorStyle.ERROR_CODE,
        ),
        ("POST", "/v1/users/password"): (
            "authsvc.v1.PasswordService.AddPassword",
            ErrorStyle.ERROR_CODE,
        ),
        ("DELETE", "/v1/users/password"): (
            "authsvc.v1.PasswordService.DeletePassword",
            ErrorStyle.ERROR_CODE,
        ),
        ("POST", "/authorize"): ("authsvc.v1.AuthService.IssueApiToken", ErrorStyle.STATUS),
    }
    for key, (method, style) in expected.items():
        assert table[key].method.full_name == method
        assert table[key].error_style is style
        assert table[key].body == "*"


def test_every_service_module_is_discovered() -> None:
    """Every authsvc.v1 *_service_pb2 module is read, so a new annotated service needs no
    gateway change."""
    names = {f.name for f in service_files()}
    assert {"authsvc/v1/auth_service.proto", "authsvc/v1/password_service.proto"} <= names
    assert all(name.endswith("_service.proto") for name in names)


@pytest.mark.parametrize(
    ("template", "path", "values"),
    [
        ("/", "/", {}),
        ("/:ping", "/:ping", {}),
        ("/v1/users/authorize", "/v1/users/authorize", {}),
        ("/v1/users/authorize", "/v1/users/authorize/", None),
        ("/v1/tokens:verify", "/v1/tokens:verify", {}),
        ("/v1/tokens:verify", "/v1/tokens", None),
        ("/.well-known/jwks.json", "/.well-known/jwks.json", {}),
        ("/.well-known/jwks.json", "/.well-known/jwksXjson", None),
        ("/v1/{name}", "/v1/bob", {"name": "bob"}),
        ("/v1/{name}", "/v1/a/b", None),
        ("/v1/{name=users/*}", "/v1/users/bob", {"name": "users/bob"}),
        ("/v1/{name=users/*}", "/v1/users%2Fbob", {"name": "users%2Fbob"}),
        ("/v1/{name=users/*}", "/v1/groups/bob", None),
        ("/v1/{name=users/*}:activate", "/v1/users/bob:activate", {"name": "users/bob"}),
        ("/v1/{name=users/*}:activate", "/v1/users/bob", None),
        ("/v1/{a.b}/x/{c}", "/v1/1/x/2", {"a.b": "1", "c": "2"}),
        ("/v1/files/{path=**}", "/v1/files/a/b/c.txt", {"path": "a/b/c.txt"}),
        ("/v1/*/items", "/v1/anything/items", {}),
    ],
)
def test_template_matching(template: str, path: str, values: dict[str, str] | None) -> None:
    """Templates match raw paths per google.api.http, verbs and %2F inside variables included."""
    assert parse_template(template).match(path) == values


@pytest.mark.parametrize(
    "template",
    ["v1/x", "/v1/{name", "/v1/name}", "/v1//x", "/v1/{a={b}}", "/v1/**/x", "/v1/{a-b}", "/v1/x:"],
)
def test_bad_templates_are_refused(template: str) -> None:
    """A malformed template is a start-up error, not a route that never matches."""
    with pytest.raises(RouteError):
        parse_template(template)


def test_every_rule_feature_is_read(library_routes: list[Route]) -> None:
    """Methods (custom too), templates, body, response_body and additional_bindings all become
    routes; an RPC without an HTTP rule becomes none."""
    table = {(r.http_method, r.template.text): r for r in library_routes}
    assert set(table) == {
        ("GET", "/v1/{name=shelves/*/books/*}"),
        ("GET", "/v1/books/{name}"),
        ("GET", "/v1/{parent=shelves/*}/books"),
        ("POST", "/v1/{parent=shelves/*}/books"),
        ("PATCH", "/v1/{book.name=shelves/*/books/*}"),
        ("POST", "/v1/{name=shelves/*/books/*}:archive"),
        ("PURGE", "/v1/{name=shelves/*}"),
        ("GET", "/v1/files/{path=**}"),
    }
    assert table[("GET", "/v1/books/{name}")].operation_id == "LibraryService_GetBook2"
    assert table[("GET", "/v1/{parent=shelves/*}/books")].response_body == "books"
    assert table[("POST", "/v1/{parent=shelves/*}/books")].body == "book"
    assert table[("GET", "/v1/files/{path=**}")].body == ""


def test_a_path_bound_twice_is_refused(library_file) -> None:
    """Two RPCs on one method and path would shadow each other: a start-up error."""
    with pytest.raises(RouteError, match="bound by both"):
        build_routes([library_file, library_file])


BOOK = {"title": "Dune"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/shelves/s1/books/b1", None, 503),
        ("GET", "/v1/books/b1", None, 503),
        ("GET", "/v1/shelves/s1/books?pageSize=10&genres=GENRE_POETRY", None, 503),
        ("POST", "/v1/shelves/s1/books", BOOK, 503),
        ("PATCH", "/v1/shelves%2Fs1%2Fbooks%2Fb1", BOOK, 503),
        ("POST", "/v1/shelves/s1/books/b1:archive", {"note": "old"}, 503),
        ("PURGE", "/v1/shelves/s1", None, 503),
        ("GET", "/v1/files/etc/motd?revision=3", None, 503),
        ("GET", "/v1/files/etc/motd", None, 400),
        ("POST", "/v1/shelves/s1/books", None, 400),
        ("POST", "/v1/shelves/s1/books", {"pages": 1}, 400),
        ("GET", "/v1/shelves/s1/books?pageSize=ten", None, 400),
        ("GET", "/v1/shelves/s1/books?genres=GENRE_NOVEL", None, 400),
        ("DELETE", "/v1/shelves/s1/books/b1", None, 405),
        ("POST", "/v1/shelves/s1/books/b1:publish", None, 405),
        ("GET", "/v1/shelves/s1/books/b1/pages", None, 404),
        ("GET", "/v1/shelves", None, 404),
    ],
)
async def test_generic_routes_are_served(
    library_routes: list[Route],
    dead_target: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
    status: int,
) -> None:
    """Any annotated RPC is routed and transcoded with no gateway change: matched calls reach
    the (here unreachable, so 503) server; bad or missing parameters are 400 before it; others
    404/405."""
    async with (
        serving_gateway(
            ChannelDispatcher(dead_target),
            "127.0.0.1:0",
            routes=library_routes,
            shutdown_timeout=1.0,
        ) as port,
        aiohttp.ClientSession() as session,
        session.request(
            method, URL(f"http://127.0.0.1:{port}{path}", encoded=True), json=body
        ) as response,
    ):
        assert response.status == status, await response.text()
        assert (await json_of(response))["error_code"]
