"""An OpenAPI 3.0 document of the gateway, from the same route table and message descriptors.

Schemas use the JSON names the gateway reads and writes; 64-bit integers are numbers, enums their
names, `google.api.field_behavior` REQUIRED fields are required, OUTPUT_ONLY fields read-only (and
required in replies, where every field without presence is always printed). Request bodies are
closed (`additionalProperties: false`), as the gateway refuses unknown fields.

The generated `_pb2` modules carry no source info, so descriptions are not the proto comments.

`python -m service.apidocs.openapi > openapi.json` writes the document.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from collections.abc import Sequence
from typing import Any, Final

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from service.errors import GRPC_CODE, HTTP_STATUS, Reason
from service.gateway.errors import BASIC_CHALLENGE
from service.gateway.routes import ErrorStyle, Route, build_routes, service_files
from service.gateway.transcoding import INT_RANGES

F = FieldDescriptor
OPENAPI_VERSION = "3.0.3"
SCHEMA_PREFIX = "#/components/schemas/"
RESPONSE_PREFIX = "#/components/responses/"
JSON = "application/json"

# The error statuses every RPC route documents, and why each can happen.
ERROR_STATUSES: Final[dict[int, str]] = {
    400: "The request is malformed (JSON, a field's type or value) or a precondition failed.",
    401: "Credentials are missing or wrong, the password expired or the account is locked.",
    403: "The account has expired.",
    404: "No such path, or the named resource does not exist.",
    405: "The path exists but not with this method (see Allow).",
    413: "The request body is larger than 64 KiB.",
    415: "A non-empty body that is not application/json.",
    429: "Too many failed attempts: wait for Retry-After seconds.",
    500: "An unexpected error (logged with the request id).",
    503: "The service or its database is unavailable.",
    504: "The service did not answer in time.",
}
_GATEWAY_REASONS: Final[dict[int, tuple[str, ...]]] = {
    400: ("invalid_argument",),
    404: ("not_found",),
    405: ("method_not_allowed",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    500: ("internal",),
    503: ("unavailable",),
    504: ("deadline_exceeded",),
}

# JSON Schema types and formats by C++ type; integer ranges come from the transcoder's table.
_TYPES: Final = {
    F.CPPTYPE_STRING: "string",
    F.CPPTYPE_BOOL: "boolean",
    **dict.fromkeys(INT_RANGES, "integer"),
}
_FORMATS: Final = {
    F.CPPTYPE_INT32: "int32",
    F.CPPTYPE_UINT32: "int64",
    F.CPPTYPE_INT64: "int64",
}


def _behaviors(field: FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


class _Schemas:
    """Builds the component schemas, one per message, on demand."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # reserve first: messages may recurse
            self.components[message.full_name] = self.message(message)
        return {"$ref": SCHEMA_PREFIX + message.full_name}

    def message(self, message: Descriptor) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.fields:
            properties[field.json_name] = self.field(field)
            behaviors = _behaviors(field)
            if field_behavior_pb2.REQUIRED in behaviors or (
                field_behavior_pb2.OUTPUT_ONLY in behaviors and not field.has_presence
            ):
                required.append(field.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        schema: dict[str, Any]
        if field.is_repeated:
            schema = {"type": "array", "items": self.value(field)}
        else:
            schema = self.value(field)
        behaviors = _behaviors(field)
        flags: dict[str, bool] = {}
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            flags["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            flags["writeOnly"] = True
        if flags and "$ref" in schema:
            schema = {"allOf": [schema]}  # siblings of $ref are ignored in OpenAPI 3.0
        return {**schema, **flags}

    def value(self, field: FieldDescriptor) -> dict[str, Any]:
        """The schema of one value of the field (an item, for repeated fields)."""
        if field.message_type is not None:
            return self.ref(field.message_type)
        return _scalar_schema(field)


def _scalar_schema(field: FieldDescriptor) -> dict[str, Any]:
    if field.enum_type is not None:
        return {"type": "string", "enum": list(field.enum_type.values_by_name)}
    kind = field.cpp_type
    schema: dict[str, Any] = {"type": _TYPES[kind]}
    if kind in _FORMATS:
        schema["format"] = _FORMATS[kind]
    if kind in INT_RANGES:
        schema["minimum"], schema["maximum"] = INT_RANGES[kind]
    return schema


def _error_schemas() -> dict[str, dict[str, Any]]:
    return {
        "ErrorCodeBody": {
            "type": "object",
            "description": "An error, Redis Enterprise style.",
            "properties": {
                "error_code": {
                    "type": "string",
                    "description": "The reason in lower case, e.g. invalid_credentials.",
                },
                "message": {"type": "string"},
            },
            "required": ["error_code", "message"],
            "additionalProperties": False,
        },
        "StatusBody": {
            "type": "object",
            "description": "An error, Densify style.",
            "properties": {
                "status": {"type": "integer", "format": "int32", "description": "HTTP status."},
                "message": {"type": "string"},
            },
            "required": ["status", "message"],
            "additionalProperties": False,
        },
        "HealthStatus": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "message": {"type": "string"},
            },
            "required": ["status"],
            "additionalProperties": False,
        },
    }


def _error_schema_ref(style: ErrorStyle) -> dict[str, Any]:
    name = "StatusBody" if style is ErrorStyle.STATUS else "ErrorCodeBody"
    return {"$ref": SCHEMA_PREFIX + name}


_REQUEST_ID_HEADER: Final = {
    "X-Request-Id": {
        "description": "The request's id: the caller's X-Request-Id if valid, else a new one.",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _reasons_for(status: int) -> list[str]:
    reasons = [r.value.lower() for r in Reason if HTTP_STATUS[GRPC_CODE[r]] == status]
    reasons += [r for r in _GATEWAY_REASONS.get(status, ()) if r not in reasons]
    return reasons


def _response_prefix(style: ErrorStyle) -> str:
    return "Status" if style is ErrorStyle.STATUS else "ErrorCode"


def _error_response_components(style: ErrorStyle) -> dict[str, Any]:
    """components/responses for one body style: `ErrorCode400`, ..., `ErrorCodeDefault`."""
    prefix = _response_prefix(style)
    responses: dict[str, Any] = {}
    for status, text in ERROR_STATUSES.items():
        description = text
        if style is ErrorStyle.ERROR_CODE and _reasons_for(status):
            description += " error_code: " + ", ".join(_reasons_for(status)) + "."
        headers: dict[str, Any] = dict(_REQUEST_ID_HEADER)
        if status == 401:
            headers["WWW-Authenticate"] = {
                "description": "The Basic challenge.",
                "required": True,
                "schema": {"type": "string", "example": BASIC_CHALLENGE},
            }
        if status == 405:
            headers["Allow"] = {"required": True, "schema": {"type": "string"}}
        if status in (429, 503):
            headers["Retry-After"] = {
                "description": "Seconds to wait before trying again, when known.",
                "schema": {"type": "integer", "minimum": 0},
            }
        responses[f"{prefix}{status}"] = {
            "description": description,
            "headers": headers,
            "content": {JSON: {"schema": _error_schema_ref(style)}},
        }
    responses[f"{prefix}Default"] = {
        "description": "Any other error.",
        "headers": dict(_REQUEST_ID_HEADER),
        "content": {JSON: {"schema": _error_schema_ref(style)}},
    }
    return responses


def _error_responses(style: ErrorStyle) -> dict[str, Any]:
    prefix = RESPONSE_PREFIX + _response_prefix(style)
    responses = {str(status): {"$ref": f"{prefix}{status}"} for status in ERROR_STATUSES}
    responses["default"] = {"$ref": f"{prefix}Default"}
    return responses


def _security(route: Route) -> list[dict[str, list[str]]] | None:
    # From the method's `(authsvc.v1.basic_credentials)` option (imported here, as in routes.py).
    from authsvc.v1 import http_options_pb2

    extensions: Any = route.method.GetOptions().Extensions
    credentials = extensions[http_options_pb2.basic_credentials]
    if credentials == http_options_pb2.BASIC_CREDENTIALS_REQUIRED:
        return [{"basicAuth": []}]
    if credentials == http_options_pb2.BASIC_CREDENTIALS_OPTIONAL:
        return [{"basicAuth": []}, {}]
    return None


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    method = route.method
    request = method.input_type
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [method.containing_service.name],
        "summary": f"{method.containing_service.name}.{method.name}",
        "description": f"Calls the gRPC method `{method.full_name}`.",
    }
    if route.body:
        operation["requestBody"] = {
            "description": "JSON; an empty body is the same as {}.",
            "required": False,
            "content": {JSON: {"schema": schemas.ref(request)}},
        }
    operation["responses"] = {
        "200": {
            "description": "OK",
            "headers": dict(_REQUEST_ID_HEADER),
            "content": {JSON: {"schema": schemas.ref(method.output_type)}},
        },
        **_error_responses(route.error_style),
    }
    security = _security(route)
    if security is not None:
        operation["security"] = security
    return operation


def _builtin_paths() -> dict[str, Any]:
    health = {"$ref": SCHEMA_PREFIX + "HealthStatus"}
    error = {
        "description": "An error.",
        "headers": dict(_REQUEST_ID_HEADER),
        "content": {JSON: {"schema": _error_schema_ref(ErrorStyle.ERROR_CODE)}},
    }

    def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
        return {
            "description": description,
            "headers": dict(_REQUEST_ID_HEADER),
            "content": {JSON: {"schema": schema}},
        }

    def get(name: str, summary: str, **responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {
                "operationId": f"Gateway_{name}",
                "tags": ["Gateway"],
                "summary": summary,
                "responses": {**{k.lstrip("_"): v for k, v in responses.items()}, "default": error},
            }
        }

    ready = "Readiness: the gRPC server reports SERVING (its database answers)."
    return {
        "/healthz": get("Healthz", "Liveness: the gateway process is up.", _200=ok(health)),
        "/readyz": get("Readyz", ready, _200=ok(health), _503=ok(health, "Not ready.")),
        "/openapi.json": get("OpenApi", "This document.", _200=ok({"type": "object"})),
    }


def _version() -> str:
    try:
        return importlib.metadata.version("authsvc")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare tree
        return "0.0.0"


def openapi_document(routes: Sequence[Route] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document of `routes` (default: every annotated authsvc.v1 RPC) and of
    the gateway's own endpoints."""
    if routes is None:
        routes = build_routes(service_files())
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = paths.setdefault(route.path, {})
        path[route.http_method.lower()] = _operation(route, schemas)
    paths.update(_builtin_paths())
    services = sorted({r.method.containing_service.name for r in routes})
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "authsvc",
            "version": _version(),
            "description": (
                "Passwords in, signed JWTs out. The REST face of the authsvc gRPC services, "
                "served by its gateway. Every answer carries X-Request-Id."
            ),
        },
        "tags": [{"name": name} for name in [*services, "Gateway"]],
        "paths": paths,
        "components": {
            "schemas": {**schemas.components, **_error_schemas()},
            "responses": {
                name: response
                for style in sorted(
                    {r.error_style for r in routes} | {ErrorStyle.ERROR_CODE}, key=str
                )
                for name, response in _error_response_components(style).items()
            },
            "securitySchemes": {
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "RFC 7617; the password is everything after the first ':'.",
                }
            },
        },
    }


def main() -> int:
    json.dump(openapi_document(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
