"""The OpenAPI document: built from the route table, served at /openapi.json, loadable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis

from service.apidocs.openapi import openapi_document
from service.gateway.routes import Route, build_routes, service_files
from tests.gateway.helpers import json_of

ROOT = Path(__file__).resolve().parents[2]
ERRORS = {"400", "401", "403", "404", "405", "413", "415", "429", "503"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def resolve_response(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ref = response.get("$ref")
    if ref is None:
        return response
    return document["components"]["responses"][ref.rsplit("/", 1)[1]]


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return document["paths"][path][method]


async def test_served_document_is_the_generated_one(http: aiohttp.ClientSession, document) -> None:
    """GET /openapi.json answers the document built from the route table."""
    async with http.get("/openapi.json") as response:
        assert response.status == 200
        assert await json_of(response) == document


def test_every_route_has_an_operation(document) -> None:
    """Each route of the table is a path and method of the document, plus the health routes."""
    routes = build_routes(service_files())
    expected = {(r.path, r.http_method.lower()) for r in routes}
    expected |= {("/healthz", "get"), ("/readyz", "get"), ("/openapi.json", "get")}
    found = {(path, method) for path, item in document["paths"].items() for method in item}
    assert found == expected
    assert document["openapi"].startswith("3.0")


def test_rpc_operations_document_success_and_errors(document) -> None:
    """Each RPC operation has a 200 schema and the error answers in its route's body style;
    401 declares WWW-Authenticate."""
    for route in build_routes(service_files()):
        op = operation(document, route.http_method.lower(), route.path)
        assert "200" in op["responses"] and set(op["responses"]) >= ERRORS
        body = "StatusBody" if route.error_style.value == "status" else "ErrorCodeBody"
        for status in ERRORS:
            answer = resolve_response(document, op["responses"][status])
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{body}"}
        unauthorized = resolve_response(document, op["responses"]["401"])
        assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True


def test_seed_schemas_use_json_names_and_types(document) -> None:
    """Request and reply schemas use the seeds' names and JSON types; REQUIRED is required."""
    authorize = operation(document, "post", "/v1/users/authorize")
    request = resolve(document, authorize["requestBody"]["content"]["application/json"]["schema"])
    assert set(request["properties"]) == {"username", "password", "ttl"}
    assert request["properties"]["ttl"]["type"] == "integer"
    assert request["properties"]["ttl"]["format"] == "int32"
    assert "required" not in request and request["additionalProperties"] is False
    reply = resolve(
        document, authorize["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert reply["properties"]["access_token"]["type"] == "string"

    densify = operation(document, "post", "/authorize")
    request = resolve(document, densify["requestBody"]["content"]["application/json"]["schema"])
    assert set(request["properties"]) == {"userName", "pwd"}
    assert set(request["required"]) == {"userName", "pwd"}
    reply = resolve(document, densify["responses"]["200"]["content"]["application/json"]["schema"])
    assert reply["properties"]["expires"]["type"] == "integer"
    assert reply["properties"]["expires"]["format"] == "int64"
    assert set(reply["required"]) == {"apiToken", "expires", "status"}

    for method, field in (
        ("put", "new_password"),
        ("post", "new_password"),
        ("delete", "old_password"),
    ):
        op = operation(document, method, "/v1/users/password")
        request = resolve(document, op["requestBody"]["content"]["application/json"]["schema"])
        assert request["required"] == [field]


def test_basic_security_where_credentials_are_read(document) -> None:
    """Password routes require Basic; Authorize accepts it optionally; /authorize has none."""
    assert document["components"]["securitySchemes"]["basicAuth"] == {
        "type": "http",
        "scheme": "basic",
        "description": document["components"]["securitySchemes"]["basicAuth"]["description"],
    }
    for method in ("put", "post", "delete"):
        assert operation(document, method, "/v1/users/password")["security"] == [{"basicAuth": []}]
    assert operation(document, "post", "/v1/users/authorize")["security"] == [
        {"basicAuth": []},
        {},
    ]
    assert "security" not in operation(document, "post", "/authorize")


def test_generic_features_are_described(library_routes: list[Route]) -> None:
    """Bodies, replies and the messages of any annotated API are described: int64 ranges,
    enums by name, OUTPUT_ONLY read-only; a route without a body has none and no parameters."""
    doc = openapi_document(library_routes)
    shelf = doc["paths"]["/v1/shelf"]["get"]
    assert "parameters" not in shelf and "requestBody" not in shelf
    reply = shelf["responses"]["200"]["content"]["application/json"]["schema"]
    assert reply == {"$ref": "#/components/schemas/gwtest.v1.Shelf"}
    create = doc["paths"]["/v1/books"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/gwtest.v1.Book"
    }
    assert "parameters" not in create
    assert set(doc["paths"]["/v1/books"]) == {"post", "put", "patch", "delete"}
    book = doc["components"]["schemas"]["gwtest.v1.Book"]["properties"]
    assert book["pages"] == {
        "type": "integer",
        "format": "int64",
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    }
    assert book["genre"]["enum"] == ["GENRE_UNSPECIFIED", "GENRE_FICTION", "GENRE_POETRY"]
    assert book["serial"]["readOnly"] is True
    assert "/v1/books:archive" in doc["paths"]


def test_schemathesis_loads_every_operation(document) -> None:
    """Schemathesis reads the document and finds every operation valid."""
    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    assert results and all(r.ok() for r in results)


def test_committed_openapi_json_is_current(document) -> None:
    """openapi.json at the repository root is what `python -m service.apidocs.openapi` writes
    now (run `make openapi` after changing a proto)."""
    written = subprocess.run(
        [sys.executable, "-m", "service.apidocs.openapi"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    assert written.stderr == ""
    assert json.loads(written.stdout) == document
    committed = ROOT / "openapi.json"
    assert committed.read_text(encoding="utf-8") == written.stdout, "run `make openapi`"
