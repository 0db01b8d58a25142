"""JSON <-> messages on the made-up library API: strict parsing, every field printed, numbers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from authsvc.v1 import auth_service_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

from service.gateway.errors import GatewayError
from service.gateway.routes import Route
from service.gateway.transcoding import build_request, message_to_json


def route_for(routes: list[Route], method: str, path: str) -> Route:
    return next(r for r in routes if (r.http_method, r.path) == (method, path))


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


def test_body_fills_the_request(library_routes) -> None:
    """A body:"*" route's JSON body is the request."""
    route = route_for(library_routes, "POST", "/v1/books")
    request: Any = build_request(
        route.request_class,
        {"title": "T", "pages": 3, "tags": ["a", "b"], "genre": "GENRE_POETRY"},
    )
    assert (request.title, request.pages, list(request.tags)) == ("T", 3, ["a", "b"])
    assert request.genre == 2


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "missing required field 'title'"),
        (None, "JSON object"),
        ([], "JSON object"),
        ({"title": "T", "isbn": "1", "issn": "2"}, "not a valid gwtest.v1.Book"),  # by json_format
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
    """Each body that does not mean exactly one message is a 400 naming the field."""
    route = route_for(library_routes, "POST", "/v1/books")
    with pytest.raises(GatewayError, match=re.escape(fragment)):
        build_request(route.request_class, body)


def test_integral_numbers_fill_integer_fields(library_routes) -> None:
    """A JSON number with no fraction (3.0) is an integer, as ProtoJSON reads it."""
    route = route_for(library_routes, "POST", "/v1/books")
    request: Any = build_request(route.request_class, {"title": "T", "pages": 3.0})
    assert request.pages == 3


def test_empty_body_leaves_the_request_empty(library_routes) -> None:
    """No body on a body:"*" route (read as {}) is the empty message."""
    route = route_for(library_routes, "POST", "/v1/books:archive")
    request: Any = build_request(route.request_class, {})
    assert request.name == "" and request.note == ""
