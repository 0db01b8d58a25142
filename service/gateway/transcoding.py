"""JSON <-> protobuf messages (grpc-gateway's marshaler): protobuf's `json_format`, with a
strict pass in front of it; request bodies are decoded here too (UTF-8, no key twice, no NaN).

`json_format.ParseDict` builds the request, but it takes what the gateway refuses ("12" for an
integer, `true` for a number, an enum's number, proto names, `null`) and words its errors for
programmers. So the request's JSON is first checked against the descriptor, refusing with the
field's name: an unknown field (known by `json_name` only: the seeds' `new_password`,
`userName`), a wrong type, `null` (but for google.protobuf.Value), an integer out of range or with
a fraction, an enum not by name, two members of one oneof, an unpaired surrogate, bad base64, and
a missing `(google.api.field_behavior) = REQUIRED` field. Path variables and query parameters
(top-level scalar fields by JSON or proto name, repeated for repeated fields; one naming no field
is ignored, as grpc-gateway does) are text turned into JSON values and folded into the same dict,
the path last.
Replies print every field, 64-bit integers as JSON numbers (the seeds' `expires` is a number).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any, Final, cast
from urllib.parse import unquote

from google.api import field_behavior_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from service.gateway.errors import GatewayError
from service.gateway.routes import Route, is_scalar

F = FieldDescriptor
WRAPPERS: Final = frozenset(
    f"google.protobuf.{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Types with a JSON form of their own, parsed by json_format.
WELL_KNOWN: Final = WRAPPERS | {
    f"google.protobuf.{n}"
    for n in ("Timestamp", "Duration", "FieldMask", "Any", "Struct", "Value", "ListValue")
}
INT_RANGES: Final = {
    F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    F.CPPTYPE_UINT32: (0, 2**32 - 1),
    F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
FLOAT_LIMITS: Final = {
    F.CPPTYPE_FLOAT: 3.4028234663852886e38,
    F.CPPTYPE_DOUBLE: 1.7976931348623157e308,
}
_EXPECTED: Final[dict[int, tuple[type | tuple[type, ...], str]]] = {
    F.CPPTYPE_STRING: (str, "a string"),
    F.CPPTYPE_BOOL: (bool, "true or false"),
    F.CPPTYPE_ENUM: (str, "an enum name"),
    **dict.fromkeys(FLOAT_LIMITS, ((int, float), "a number")),
    **dict.fromkeys(INT_RANGES, (int, "an integer")),
}
_SPECIAL_FLOATS: Final = frozenset({"NaN", "Infinity", "-Infinity"})  # ProtoJSON's spellings
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
    except json_format.ParseError:  # what the strict pass leaves to json_format (map keys)
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


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _accepts_null(field: FieldDescriptor) -> bool:
    kind = field.message_type or field.enum_type
    return kind is not None and kind.full_name in (
        "google.protobuf.Value",
        "google.protobuf.NullValue",
    )


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
    """A field's JSON value: a map (its keys left to json_format), a list or one value."""
    if value is None and not _accepts_null(field):
        raise TranscodeError(f"field {where!r} must not be null")
    if is_map(field) or field.is_repeated:
        kind = dict if is_map(field) else list
        if not isinstance(value, kind):
            raise TranscodeError(
                f"field {where!r} must be a JSON {'object' if kind is dict else 'array'}"
            )
        if isinstance(value, dict):
            item = field.message_type.fields_by_name["value"]  # type: ignore[union-attr]
            return {k: _value(item, v, f"{where}[{k!r}]") for k, v in value.items()}
        return [_value(field, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return _value(field, value, where)


def _value(field: FieldDescriptor, value: Any, where: str, label: str = "") -> Any:
    """One value of `field` (an item, for a repeated one), checked and made canonical."""
    label = label or f"field {where!r}"
    message, kind, enum = field.message_type, field.cpp_type, field.enum_type
    if value is None:
        if _accepts_null(field):
            return None
        raise TranscodeError(f"{label} must not be null")
    if message is not None:
        if message.full_name in WELL_KNOWN:  # json_format checks these forms
            try:
                json_format.ParseDict(value, message_factory.GetMessageClass(message)())
            except (json_format.ParseError, TypeError, ValueError, AttributeError):
                raise TranscodeError(f"{label} is not a valid {message.full_name}") from None
            return value
        if not isinstance(value, dict):
            raise TranscodeError(f"{label} must be a JSON object")
        return _object(message, value, where)
    if kind in INT_RANGES and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind in FLOAT_LIMITS and isinstance(value, str) and value in _SPECIAL_FLOATS:
        return value
    types, what = _EXPECTED[kind]
    if enum is not None:
        what = "one of: " + ", ".join(enum.values_by_name)
    elif field.type == F.TYPE_BYTES:
        what = "a base64 string"
    valid = isinstance(value, types) and (kind == F.CPPTYPE_BOOL or not isinstance(value, bool))
    if not valid or (enum is not None and value not in enum.values_by_name):
        raise TranscodeError(f"{label} must be {what}")
    if field.type == F.TYPE_BYTES:  # json_format skips characters outside the alphabet
        standard = value.replace("-", "+").replace("_", "/")
        try:
            data = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise TranscodeError(f"{label} must be {what}") from None
        return base64.urlsafe_b64encode(data).decode()
    if kind == F.CPPTYPE_STRING and re.search("[\ud800-\udfff]", value):
        raise TranscodeError(f"{label} is not valid UTF-8 text")
    low, high = INT_RANGES.get(kind, (0, 0))
    if kind in INT_RANGES and not low <= value <= high:
        raise TranscodeError(f"{label} must be between {low} and {high}")
    if kind in FLOAT_LIMITS:
        number = float(value) if abs(value) < 2**1024 else math.inf
        if not math.isfinite(number) or abs(number) > FLOAT_LIMITS[kind]:
            raise TranscodeError(f"{label} is out of range")
        return number
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
    if kind in FLOAT_LIMITS and text not in _SPECIAL_FLOATS:
        try:
            return float(text)
        except ValueError:
            raise TranscodeError(f"{label} must be a number") from None
    return text  # strings, enums and special floats stay text


def message_to_json(message: Message) -> Any:
    """The JSON value (for json.dumps) of a reply."""
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _numbers(descriptor, data)


def _numbers(descriptor: Descriptor | None, data: Any, kind: int = F.CPPTYPE_MESSAGE) -> Any:
    """`data` with 64-bit integers as JSON numbers (json_format prints them as strings)."""
    if descriptor is None or descriptor.full_name in (
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
    ):
        wide = descriptor is not None or kind in (F.CPPTYPE_INT64, F.CPPTYPE_UINT64)
        return int(data) if wide and isinstance(data, str) else data
    if descriptor.full_name in WELL_KNOWN or not isinstance(data, dict):
        return data
    for field in descriptor.fields:
        if (value := data.get(field.json_name)) is None:
            continue
        item = field.message_type.fields_by_name["value"] if is_map(field) else field  # type: ignore[union-attr]
        inner, kind = item.message_type, item.cpp_type
        if is_map(field):
            data[field.json_name] = {k: _numbers(inner, v, kind) for k, v in value.items()}
        elif field.is_repeated:
            data[field.json_name] = [_numbers(inner, v, kind) for v in value]
        else:
            data[field.json_name] = _numbers(inner, value, kind)
    return data
