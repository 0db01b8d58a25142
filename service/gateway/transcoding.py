"""JSON <-> protobuf messages (grpc-gateway's marshaler): protobuf's `json_format`, with a
strict pass in front of it; request bodies are decoded here too (UTF-8, no key twice, no NaN).

`json_format.ParseDict` builds the request, but it takes what the gateway refuses ("12" for an
integer, `true` for a number, an enum's number, proto names, `null`) and words its errors for
programmers. So the request's JSON is first checked against the descriptor, refusing with the
field's name: an unknown field (known by `json_name` only: the seeds' `new_password`,
`userName`), a wrong type, `null`, an integer out of range or with a fraction, an enum not by
name, two members of one oneof, an unpaired surrogate, and a missing
`(google.api.field_behavior) = REQUIRED` field. Path variables and query parameters (top-level
scalar fields by JSON or proto name, repeated for repeated fields; one naming no field is
ignored, as grpc-gateway does) are text turned into JSON values and folded into the same dict,
the path last. Replies print every field, 64-bit integers as JSON numbers (the seeds' `expires`
is a number).

The messages hold strings, bools, integers, enums, messages of those and repeated fields:
routes.py refuses an RPC with any other kind (maps, bytes, floating point, google.protobuf
types) when the routes are built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache, partial
from typing import Any, Final, cast
from urllib.parse import unquote

from google.api import field_behavior_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from service.gateway.errors import GatewayError
from service.gateway.routes import Route, is_scalar

F = FieldDescriptor
INT_RANGES: Final = {
    F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    F.CPPTYPE_UINT32: (0, 2**32 - 1),
    F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_EXPECTED: Final[dict[int, tuple[type, str]]] = {
    F.CPPTYPE_STRING: (str, "a string"),
    F.CPPTYPE_BOOL: (bool, "true or false"),
    F.CPPTYPE_ENUM: (str, "an enum name"),
    **dict.fromkeys(INT_RANGES, (int, "an integer")),
}
_BOOL_TEXT: Final = {"true": True, "1": True, "false": False, "0": False}


class TranscodeError(GatewayError):
    """The request cannot be turned into the message (400); the text is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "invalid_argument", message)


def parse_json(raw: bytes) -> Any:
    """A request body's JSON value: UTF-8, no key twice in an object, no NaN or Infinity."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant)
    except UnicodeDecodeError:
        raise TranscodeError("the request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        where = f"(line {exc.lineno}, column {exc.colno})"
        raise TranscodeError(f"malformed JSON: {exc.msg} {where}") from None
    except (ValueError, RecursionError):  # NaN, Infinity; an integer of too many digits
        raise TranscodeError("malformed JSON") from None


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # TranscodeError is no ValueError: json.loads lets it through
            raise TranscodeError(f"malformed JSON: key {key!r} appears twice")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def build_request(
    route: Route,
    path_values: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: Any = None,
) -> Message:
    """The request message for `route` from the raw path values, the query parameters (routes
    without a body) and the parsed JSON body (`{}` when the request had none)."""
    descriptor = cast(Descriptor, route.request_class.DESCRIPTOR)
    bound = frozenset(route.template.variables)
    if route.body:
        if not isinstance(body, dict):
            raise TranscodeError("the request body must be a JSON object")
        data = _object(descriptor, body, "", bound)
    else:
        data = _query(descriptor, query, bound)
        for field in _required(descriptor):
            if field.json_name not in data and field.name not in bound:
                raise TranscodeError(f"missing required query parameter {field.json_name!r}")
    for name, raw in path_values.items():
        try:
            text = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise TranscodeError(f"path parameter {name!r} is not valid UTF-8") from None
        field = descriptor.fields_by_name[name]
        data[field.json_name] = _leaf(field, [text], f"path parameter {name!r}")
    try:
        return json_format.ParseDict(data, route.request_class())
    except json_format.ParseError:  # nothing the strict pass lets through, but be sure
        raise TranscodeError(f"the request is not a valid {descriptor.full_name}") from None


@cache
def _required(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The fields marked `(google.api.field_behavior) = REQUIRED`."""
    behavior = field_behavior_pb2.field_behavior
    return tuple(
        f
        for f in descriptor.fields
        if field_behavior_pb2.REQUIRED in f.GetOptions().Extensions[behavior]
    )


@cache
def _json_fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.json_name: f for f in descriptor.fields}


def _object(
    descriptor: Descriptor, obj: Mapping[str, Any], where: str, exempt: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The fields of `obj`, checked; every REQUIRED one there but those the path sets (`exempt`)."""
    fields = _json_fields(descriptor)
    oneofs: dict[str, str] = {}
    out = {}
    for key, value in obj.items():
        location = f"{where}.{key}" if where else key
        if key not in fields:
            raise TranscodeError(f"unknown field {location!r}")
        oneof = fields[key].containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            if oneof.name in oneofs:
                raise TranscodeError(
                    f"fields {oneofs[oneof.name]!r} and {location!r} exclude each other"
                )
            oneofs[oneof.name] = location
        out[key] = _field(fields[key], value, location)
    for required in _required(descriptor):
        if required.json_name not in obj and required.name not in exempt:
            location = f"{where}.{required.json_name}" if where else required.json_name
            raise TranscodeError(f"missing required field {location!r}")
    return out


def _field(field: FieldDescriptor, value: Any, where: str) -> Any:
    """A field's JSON value: a list (repeated fields) or one value."""
    if value is None or not field.is_repeated:
        return _value(field, value, where)
    if not isinstance(value, list):
        raise TranscodeError(f"field {where!r} must be a JSON array")
    return [_value(field, v, f"{where}[{i}]") for i, v in enumerate(value)]


def _value(field: FieldDescriptor, value: Any, where: str, label: str = "") -> Any:
    """One value of `field` (an item, for a repeated one), checked and made canonical."""
    label = label or f"field {where!r}"
    if value is None:
        raise TranscodeError(f"{label} must not be null")
    if field.message_type is not None:
        if not isinstance(value, dict):
            raise TranscodeError(f"{label} must be a JSON object")
        return _object(field.message_type, value, where)
    kind, enum = field.cpp_type, field.enum_type
    if kind in INT_RANGES and isinstance(value, float) and value.is_integer():
        value = int(value)
    types, what = _EXPECTED[kind]
    if enum is not None:
        what = "one of: " + ", ".join(enum.values_by_name)
    valid = isinstance(value, types) and (kind == F.CPPTYPE_BOOL or not isinstance(value, bool))
    if not valid or (enum is not None and value not in enum.values_by_name):
        raise TranscodeError(f"{label} must be {what}")
    if kind == F.CPPTYPE_STRING and re.search("[\ud800-\udfff]", value):
        raise TranscodeError(f"{label} is not valid UTF-8 text")
    low, high = INT_RANGES.get(kind, (0, 0))
    if kind in INT_RANGES and not low <= value <= high:
        raise TranscodeError(f"{label} must be between {low} and {high}")
    return value


def _query(
    descriptor: Descriptor, query: Iterable[tuple[str, str]], bound: frozenset[str]
) -> dict[str, Any]:
    """The JSON values of the top-level scalar fields the query names (by JSON or proto name;
    a name of no field is ignored, as grpc-gateway does, and so is one the path sets)."""
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        grouped.setdefault(key, []).append(value)
    data = {}
    for key, values in grouped.items():
        head = key.split(".")[0]
        field = _json_fields(descriptor).get(head) or descriptor.fields_by_name.get(head)
        if field is None or field.name in bound:
            continue
        label = f"query parameter {key!r}"
        if "." in key or not is_scalar(field):
            raise TranscodeError(f"{label}: only top-level scalar fields are query parameters")
        data[field.json_name] = _leaf(field, values, label)
    return data


def _leaf(field: FieldDescriptor, texts: Sequence[str], label: str) -> Any:
    """The JSON value of a scalar field given as text, once or (repeated fields) more."""
    if not field.is_repeated and len(texts) > 1:
        raise TranscodeError(f"{label} is given more than once")
    values = [_value(field, _from_text(field, text, label), label, label) for text in texts]
    return values if field.is_repeated else values[0]


def _from_text(field: FieldDescriptor, text: str, label: str) -> Any:
    """The JSON value a path segment or query value stands for (then checked by `_value`)."""
    kind = field.cpp_type
    if kind == F.CPPTYPE_BOOL:
        if text.lower() not in _BOOL_TEXT:
            raise TranscodeError(f"{label} must be true or false")
        return _BOOL_TEXT[text.lower()]
    if kind in INT_RANGES:
        if not re.fullmatch(r"-?[0-9]+", text):
            raise TranscodeError(f"{label} must be an integer")
        return int(text)
    return text  # strings and enums stay text


def message_to_json(message: Message) -> Any:
    """The JSON value (for json.dumps) of a reply."""
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _numbers(cast(Descriptor, message.DESCRIPTOR), data)


def _numbers(descriptor: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with 64-bit integers as JSON numbers (json_format prints them as strings)."""
    for field in descriptor.fields:
        if (value := data.get(field.json_name)) is None:
            continue
        inner = field.message_type
        if inner is None and field.cpp_type not in (F.CPPTYPE_INT64, F.CPPTYPE_UINT64):
            continue
        convert: Any = int if inner is None else partial(_numbers, inner)
        data[field.json_name] = [convert(v) for v in value] if field.is_repeated else convert(value)
    return data
