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
from service.gateway.transcoding import NO_BODY, TranscodeError, build_request, message_to_json


def route_for(routes: list[Route], method: str, template: str) -> Route:
    return next(r for r in routes if (r.http_method, r.template.text) == (method, template))


def book_class(library_file: FileDescriptor) -> type[Message]:
    return message_factory.GetMessageClass(library_file.message_types_by_name["Book"])


def test_reply_prints_every_field_with_int64_as_numbers(library_file) -> None:
    """Defaults are printed ("available": false, "tags": []); int64, uint64, Int64Value and map
    values are JSON numbers; enums are names; json names are used."""
    book = book_class(library_file)(
        name="shelves/1/books/2", pages=2**40, counts={"a": 2**53 + 1}, serial=2**64 - 1
    )
    book.copies.value = -7
    out = message_to_json(book)
    assert out["pages"] == 2**40 and out["counts"] == {"a": 2**53 + 1}
    assert out["serial"] == 2**64 - 1 and out["copies"] == -7
    assert out["available"] is False and out["tags"] == [] and out["genre"] == "GENRE_UNSPECIFIED"
    assert out["rating"] == 0 and out["cover"] == "" and out["title"] == ""
    assert "isbn" not in out and "author" not in out  # fields with presence, unset


def test_seed_json_names_in_replies() -> None:
    """The Densify reply uses apiToken, expires (a number) and status."""
    reply = auth_service_pb2.IssueApiTokenResponse(api_token="t", expires=1_700_000_000_000)
    assert message_to_json(reply) == {"apiToken": "t", "expires": 1_700_000_000_000, "status": 0}


def test_response_body_selects_one_field(library_routes, library_file) -> None:
    """response_body: "books" answers the list itself."""
    route = route_for(library_routes, "GET", "/v1/{parent=shelves/*}/books")
    reply = route.response_class()
    reply.books.add(title="Dune", pages=412)
    out = message_to_json(reply, route.response_body)
    assert isinstance(out, list) and out[0]["title"] == "Dune" and out[0]["pages"] == 412


def test_path_query_and_body_field_fill_the_request(library_routes) -> None:
    """Path variables (decoded, nested), the body field and query parameters by JSON or proto
    name all land in their fields; unknown query parameters are ignored."""
    route = route_for(library_routes, "POST", "/v1/{parent=shelves/*}/books")
    request: Any = build_request(
        route,
        {"parent": "shelves/s%C3%A9"},
        [("requestId", "r1"), ("cache_buster", "1")],
        {"title": "T", "pages": 3, "tags": ["a", "b"], "genre": "GENRE_POETRY"},
    )
    assert request.parent == "shelves/sé"
    assert request.request_id == "r1"
    assert (request.book.title, request.book.pages, list(request.book.tags)) == ("T", 3, ["a", "b"])
    assert request.book.genre == 2


def test_nested_path_variable_overrides_the_body(library_routes) -> None:
    """{book.name=...} with body "book": the path sets book.name, the body the rest."""
    route = route_for(library_routes, "PATCH", "/v1/{book.name=shelves/*/books/*}")
    request: Any = build_request(
        route, {"book.name": "shelves/1/books/2"}, [], {"name": "ignored", "title": "New"}
    )
    assert (request.book.name, request.book.title) == ("shelves/1/books/2", "New")


def test_query_parameters_for_a_bodyless_route(library_routes) -> None:
    """Repeated enums, nested fields, a Timestamp and an int come from the query string."""
    route = route_for(library_routes, "GET", "/v1/{parent=shelves/*}/books")
    request: Any = build_request(
        route,
        {"parent": "shelves/1"},
        [
            ("pageSize", "20"),
            ("genres", "GENRE_FICTION"),
            ("genres", "GENRE_POETRY"),
            ("author.displayName", "Ann"),
            ("since", "2024-01-02T03:04:05Z"),
            ("parent", "shelves/ignored"),
        ],
    )
    assert request.page_size == 20 and list(request.genres) == [1, 2]
    assert request.author.display_name == "Ann"
    assert request.since.seconds == 1704164645
    assert request.parent == "shelves/1"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ([("pageSize", "x")], "must be an integer"),
        ([("pageSize", "1"), ("pageSize", "2")], "more than once"),
        ([("pageSize", "2147483648")], "between"),
        ([("genres", "1")], "must be one of"),
        ([("since", "yesterday")], "Timestamp"),
        ([("author", "x")], "names a message"),
    ],
)
def test_bad_query_parameters(library_routes, query: list[tuple[str, str]], fragment: str) -> None:
    """A query value that does not fit its field is a TranscodeError naming the parameter."""
    route = route_for(library_routes, "GET", "/v1/{parent=shelves/*}/books")
    with pytest.raises(TranscodeError, match=fragment):
        build_request(route, {"parent": "shelves/1"}, query)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "missing required field 'title'"),
        (NO_BODY, "the request body is required"),
        (None, "must not be null"),
        ([], "JSON object"),
        ({"isbn": "1", "issn": "2"}, "exclude each other"),
        ({"pages": "12"}, "must be an integer"),
        ({"pages": 2**63}, "between"),
        ({"serial": -1}, "between"),
        ({"weight": 1e39}, "out of range"),
        ({"rating": True}, "must be a number"),
        ({"cover": "not base64!"}, "base64"),
        ({"counts": {"a": "x"}}, "must be an integer"),
        ({"counts": []}, "JSON object"),
        ({"tags": "a"}, "JSON array"),
        ({"tags": [None]}, "must not be null"),
        ({"editors": [{"born": "x"}]}, "editors[0].born"),
        ({"author": {"displayName": 1}}, "author.displayName"),
        ({"author": {"display_name": "x"}}, "unknown field 'author.display_name'"),
        ({"published": "not a time"}, "Timestamp"),
        ({"genre": 1}, "must be one of"),
    ],
)
def test_bad_bodies(library_routes, body: dict[str, Any], fragment: str) -> None:
    """Each body that does not mean exactly one message is a TranscodeError naming the field."""
    route = route_for(library_routes, "POST", "/v1/{parent=shelves/*}/books")
    with pytest.raises(TranscodeError, match=re.escape(fragment)):
        build_request(route, {"parent": "shelves/1"}, [], body)


def test_well_known_and_special_values(library_routes) -> None:
    """Timestamps, wrappers, base64url bytes, integral floats and "NaN" parse as ProtoJSON."""
    route = route_for(library_routes, "POST", "/v1/{parent=shelves/*}/books")
    request: Any = build_request(
        route,
        {"parent": "shelves/1"},
        [],
        {
            "title": "T",
            "published": "2024-01-02T03:04:05Z",
            "copies": 5,
            "cover": "_-8",
            "pages": 3.0,
            "rating": "NaN",
            "counts": {"x": 1},
        },
    )
    assert request.book.published.seconds == 1704164645
    assert request.book.copies.value == 5 and request.book.cover == b"\xff\xef"
    assert request.book.pages == 3 and request.book.rating != request.book.rating
    assert dict(request.book.counts) == {"x": 1}


def test_empty_body_leaves_the_request_empty(library_routes) -> None:
    """No body on a body:"*" route is the empty message, as {} would be."""
    route = route_for(library_routes, "POST", "/v1/{name=shelves/*/books/*}:archive")
    request: Any = build_request(route, {"name": "shelves/1/books/2"}, [], NO_BODY)
    assert request.name == "shelves/1/books/2" and request.note == ""


def test_bad_percent_encoding_in_path(library_routes) -> None:
    """A path value that decodes to invalid UTF-8 is a TranscodeError."""
    route = route_for(library_routes, "GET", "/v1/books/{name}")
    with pytest.raises(TranscodeError, match="UTF-8"):
        build_request(route, {"name": "%FF"}, [])


@pytest.mark.parametrize(
    ("cover", "expected"),
    [("/+8=", b"\xff\xef"), ("_-8", b"\xff\xef"), ("AA==", b"\x00"), ("", b"")],
)
def test_bytes_in_either_base64_alphabet(library_routes, cover: str, expected: bytes) -> None:
    """Bytes take standard or URL-safe base64, padded or not, and decode to the same bytes."""
    route = route_for(library_routes, "POST", "/v1/{parent=shelves/*}/books")
    request: Any = build_request(route, {"parent": "shelves/1"}, [], {"title": "T", "cover": cover})
    assert request.book.cover == expected
