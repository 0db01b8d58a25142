"""JSON <-> messages on the made-up library API: strict parsing, every field printed, numbers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from authsvc.v1 import auth_service_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

from service.gateway.routes import Route
from service.gateway.transcoding import TranscodeError, build_request, message_to_json


def route_for(routes: list[Route], method: str, template: str) -> Route:
    return next(r for r in routes if (r.http_method, r.template.text) == (method, template))


def book_class(library_file: FileDescriptor) -> type[Message]:
    return message_factory.GetMessageClass(library_file.message_types_by_name["Book"])


def test_reply_prints_every_field_with_int64_as_numbers(library_file) -> None:
    """Defaults are printed ("available": false, "tags": []); int64 and uint64 are JSON numbers;
    enums are names; json names are used."""
    book = book_class(library_file)(name="shelves/1/books/2", pages=2**40, serial=2**64 - 1)
    out = message_to_json(book)
    assert out["pages"] == 2**40 and out["serial"] == 2**64 - 1
    assert out["available"] is False and out["tags"] == [] and out["genre"] == "GENRE_UNSPECIFIED"
    assert out["title"] == ""
    assert "isbn" not in out and "author" not in out  # fields with presence, unset


def test_seed_json_names_in_replies() -> None:
    """The Densify reply uses apiToken, expires (a number) and status."""
    reply = auth_service_pb2.IssueApiTokenResponse(api_token="t", expires=1_700_000_000_000)
    assert message_to_json(reply) == {"apiToken": "t", "expires": 1_700_000_000_000, "status": 0}


def test_path_and_query_fill_the_request(library_routes) -> None:
    """Path variables (decoded) and query parameters by JSON or proto name land in their fields;
    unknown query parameters are ignored."""
    route = route_for(library_routes, "GET", "/v1/shelves/{shelf}/books")
    request: Any = build_request(
        route, {"shelf": "s%C3%A9"}, [("page_size", "5"), ("cache_buster", "1")]
    )
    assert request.shelf == "sé" and request.page_size == 5


def test_body_fills_the_request(library_routes) -> None:
    """A body:"*" route's JSON body is the request; its query string is not read."""
    route = route_for(library_routes, "POST", "/v1/books")
    request: Any = build_request(
        route,
        {},
        [("title", "ignored")],
        {"title": "T", "pages": 3, "tags": ["a", "b"], "genre": "GENRE_POETRY"},
    )
    assert (request.title, request.pages, list(request.tags)) == ("T", 3, ["a", "b"])
    assert request.genre == 2


def test_path_variable_overrides_the_body(library_routes) -> None:
    """{name} with body "*": the path sets name, the body the rest."""
    route = route_for(library_routes, "PATCH", "/v1/books/{name}")
    request: Any = build_request(route, {"name": "b2"}, [], {"name": "ignored", "title": "New"})
    assert (request.name, request.title) == ("b2", "New")


def test_query_parameters_for_a_bodyless_route(library_routes) -> None:
    """Repeated enums and an int come from the query string; the path wins over the query."""
    route = route_for(library_routes, "GET", "/v1/shelves/{shelf}/books")
    request: Any = build_request(
        route,
        {"shelf": "1"},
        [
            ("pageSize", "20"),
            ("genres", "GENRE_FICTION"),
            ("genres", "GENRE_POETRY"),
            ("shelf", "ignored"),
        ],
    )
    assert request.page_size == 20 and list(request.genres) == [1, 2]
    assert request.shelf == "1"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ([("pageSize", "x")], "must be an integer"),
        ([("pageSize", "1"), ("pageSize", "2")], "more than once"),
        ([("pageSize", "2147483648")], "between"),
        ([("genres", "1")], "must be one of"),
        ([("author", "x")], "only top-level scalar fields"),
        ([("author.displayName", "Ann")], "only top-level scalar fields"),
    ],
)
def test_bad_query_parameters(library_routes, query: list[tuple[str, str]], fragment: str) -> None:
    """A query value that does not fit its field is a TranscodeError naming the parameter."""
    route = route_for(library_routes, "GET", "/v1/shelves/{shelf}/books")
    with pytest.raises(TranscodeError, match=fragment):
        build_request(route, {"shelf": "1"}, query)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "missing required field 'title'"),
        (None, "JSON object"),
        ([], "JSON object"),
        ({"isbn": "1", "issn": "2"}, "exclude each other"),
        ({"pages": "12"}, "must be an integer"),
        ({"pages": 2**63}, "between"),
        ({"serial": -1}, "between"),
        ({"pages": True}, "must be an integer"),
        ({"pages": 1.5}, "must be an integer"),
        ({"tags": "a"}, "JSON array"),
        ({"tags": [None]}, "must not be null"),
        ({"editors": [{"born": "x"}]}, "editors[0].born"),
        ({"author": {"displayName": 1}}, "author.displayName"),
        ({"author": {"display_name": "x"}}, "unknown field 'author.display_name'"),
        ({"genre": 1}, "must be one of"),
    ],
)
def test_bad_bodies(library_routes, body: dict[str, Any], fragment: str) -> None:
    """Each body that does not mean exactly one message is a TranscodeError naming the field."""
    route = route_for(library_routes, "POST", "/v1/books")
    with pytest.raises(TranscodeError, match=re.escape(fragment)):
        build_request(route, {}, [], body)


def test_integral_numbers_fill_integer_fields(library_routes) -> None:
    """A JSON number with no fraction (3.0) is an integer, as ProtoJSON reads it."""
    route = route_for(library_routes, "POST", "/v1/books")
    request: Any = build_request(route, {}, [], {"title": "T", "pages": 3.0})
    assert request.pages == 3


def test_empty_body_leaves_the_request_empty(library_routes) -> None:
    """No body on a body:"*" route (read as {}) is the empty message."""
    route = route_for(library_routes, "POST", "/v1/books/{name}:archive")
    request: Any = build_request(route, {"name": "b2"}, [], {})
    assert request.name == "b2" and request.note == ""


def test_bad_percent_encoding_in_path(library_routes) -> None:
    """A path value that decodes to invalid UTF-8 is a TranscodeError."""
    route = route_for(library_routes, "GET", "/v1/books/{name}")
    with pytest.raises(TranscodeError, match="UTF-8"):
        build_request(route, {"name": "%FF"}, [])
