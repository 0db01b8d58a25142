"""JSON <-> protobuf messages, strictly, with the protos' JSON names.

Requests: a JSON value is accepted only if it means exactly one message. Fields are known by their
`json_name` only (the seeds' names: `new_password`, `userName`); an unknown field, a value of the
wrong type, `null` (except for google.protobuf.Value), an integer out of its range, a fraction for
an integer, two members of one oneof, or a string that is not valid UTF-8 is a `TranscodeError`
(400), and so is the absence of a field marked `(google.api.field_behavior) = REQUIRED` (the
OpenAPI document lists them as required; the gateway keeps that promise). Enums are given by
name. 64-bit integers are JSON numbers, not strings, both ways, because the seeds document
numbers (`expires` in epoch milliseconds). Well-known types (Timestamp, Duration, wrappers,
Struct, ...) keep their standard ProtoJSON forms.

Path variables and query parameters are text, converted by the field's type; query parameters may
name a field by its JSON or proto name, dotted for nested messages, repeated for repeated fields.
Parameters that name no field are ignored, as grpc-gateway does, so a cache-buster cannot break a
call.

Replies: every field is printed, even at its default value (`"active": false`).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any, Final, cast
from urllib.parse import unquote

from google.api import field_behavior_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from service.gateway.routes import Route

F = FieldDescriptor

WRAPPERS: Final = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)
# Types with a special JSON form, parsed and printed by json_format. Empty is an ordinary `{}`.
WELL_KNOWN: Final = WRAPPERS | frozenset(
    f"google.protobuf.{name}"
    for name in ("Any", "Timestamp", "Duration", "FieldMask", "Struct", "Value", "ListValue")
)
# Well-known types that can be written as one query or path parameter.
TEXT_WELL_KNOWN: Final = WRAPPERS | frozenset(
    f"google.protobuf.{name}" for name in ("Timestamp", "Duration", "FieldMask")
)

INT_RANGES: Final = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
INT64_TYPES: Final = frozenset(
    {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64}
)
FLOAT32_MAX: Final = 3.4028234663852886e38
_SPECIAL_FLOATS: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


class TranscodeError(ValueError):
    """The request cannot be turned into the message; the text is safe to show to the caller."""


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


NO_BODY: Final = _NoBody()


def build_request(
    route: Route,
    path_values: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: Any = NO_BODY,
) -> Message:
    """The request message for `route` from the path variables (still percent-encoded), the query
    parameters and the parsed JSON body (`NO_BODY` when the request had none)."""
    message = route.request_class()
    bound = set(route.path_fields)
    if route.body == "*":
        if body is NO_BODY:
            body = {}
        if not isinstance(body, dict):
            raise TranscodeError("the request body must be a JSON object")
        _merge_object(message, body, "", _exempt(bound, ""))
    else:
        if route.body:
            bound.add(route.body)
            _set_body_field(message, route.body, body, _exempt(bound, route.body))
        given = _apply_query(message, query, bound)
        for field in _required(_descriptor(message)):
            if field.name not in given and not _is_bound(field.name, bound):
                raise TranscodeError(f"missing required query parameter {field.json_name!r}")
    for name, raw in path_values.items():
        try:
            text = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise TranscodeError(f"path parameter {name!r} is not valid UTF-8") from None
        fields = _proto_path(_descriptor(message), name)
        _set_from_text(message, fields, [text], f"path parameter {name!r}")
    return message


# --- JSON body -> message -------------------------------------------------------------------


def _exempt(bound: Iterable[str], prefix: str) -> frozenset[str]:
    """Names of the fields directly under `prefix` ("" for the request) that the path sets."""
    start = prefix + "." if prefix else ""
    return frozenset(
        b[len(start) :] for b in bound if b.startswith(start) and "." not in b[len(start) :]
    )


def _is_bound(name: str, bound: Iterable[str]) -> bool:
    return any(name == b or b.startswith(name + ".") for b in bound)


@cache
def _required(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The fields marked `(google.api.field_behavior) = REQUIRED`."""
    return tuple(
        f
        for f in descriptor.fields
        if field_behavior_pb2.REQUIRED
        in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    )


def _set_body_field(message: Message, name: str, body: Any, exempt: frozenset[str]) -> None:
    """The body is one field's value; errors inside a message body are named from its top."""
    field = _descriptor(message).fields_by_name[name]
    if body is NO_BODY:
        if field in _required(_descriptor(message)):
            raise TranscodeError("the request body is required")
        return
    if field.message_type is not None and not field.is_repeated:
        if body is None and not _accepts_null(field):
            raise TranscodeError("the request body must not be null")
        sub = getattr(message, field.name)
        if field.message_type.full_name in WELL_KNOWN:
            _merge_message(sub, body, "")
        elif isinstance(body, dict):
            _merge_object(sub, body, "", exempt)
        else:
            raise TranscodeError("the request body must be a JSON object")
        sub.SetInParent()
    else:
        _set_field(message, field, body, field.json_name)


def _descriptor(message: Message) -> Descriptor:
    return cast(Descriptor, message.DESCRIPTOR)


def _entry_fields(field: FieldDescriptor) -> tuple[FieldDescriptor, FieldDescriptor]:
    """The key and value fields of a map field's entry message."""
    entry = field.message_type
    assert entry is not None
    return entry.fields_by_name["key"], entry.fields_by_name["value"]


@cache
def _json_fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.json_name: f for f in descriptor.fields}


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return field.is_repeated and entry is not None and entry.GetOptions().map_entry


def _accepts_null(field: FieldDescriptor) -> bool:
    if field.message_type is not None:
        return field.message_type.full_name == "google.protobuf.Value"
    return field.enum_type is not None and field.enum_type.full_name == "google.protobuf.NullValue"


def _merge_object(
    message: Message, obj: Mapping[str, Any], where: str, exempt: frozenset[str] = frozenset()
) -> None:
    """Set the fields named in `obj`; every REQUIRED field but those in `exempt` (set by the
    path) must be among them."""
    descriptor = _descriptor(message)
    fields = _json_fields(descriptor)
    oneofs: dict[str, str] = {}
    for key, value in obj.items():
        location = f"{where}.{key}" if where else key
        field = fields.get(key)
        if field is None:
            raise TranscodeError(f"unknown field {location!r}")
        oneof = field.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            if oneof.name in oneofs:
                raise TranscodeError(
                    f"fields {oneofs[oneof.name]!r} and {location!r} exclude each other"
                )
            oneofs[oneof.name] = location
        _set_field(message, field, value, location)
    for required in _required(descriptor):
        if required.json_name not in obj and required.name not in exempt:
            location = f"{where}.{required.json_name}" if where else required.json_name
            raise TranscodeError(f"missing required field {location!r}")


def _set_field(message: Message, field: FieldDescriptor, value: Any, where: str) -> None:
    if value is None and not _accepts_null(field):
        raise TranscodeError(f"field {where!r} must not be null")
    if _is_map(field):
        if not isinstance(value, dict):
            raise TranscodeError(f"field {where!r} must be a JSON object")
        key_field, value_field = _entry_fields(field)
        target = getattr(message, field.name)
        for raw_key, item in value.items():
            item_where = f"{where}[{raw_key!r}]"
            key = _scalar_from_text(key_field, raw_key, item_where)
            if item is None and not _accepts_null(value_field):
                raise TranscodeError(f"field {item_where!r} must not be null")
            if value_field.message_type is not None:
                _merge_message(target[key], item, item_where)
            else:
                target[key] = _scalar(value_field, item, item_where)
    elif field.is_repeated:
        if not isinstance(value, list):
            raise TranscodeError(f"field {where!r} must be a JSON array")
        items = getattr(message, field.name)
        for index, item in enumerate(value):
            item_where = f"{where}[{index}]"
            if item is None and not _accepts_null(field):
                raise TranscodeError(f"field {item_where!r} must not be null")
            if field.message_type is not None:
                _merge_message(items.add(), item, item_where)
            else:
                items.append(_scalar(field, item, item_where))
    elif field.message_type is not None:
        sub = getattr(message, field.name)
        _merge_message(sub, value, where)
        sub.SetInParent()
    else:
        setattr(message, field.name, _scalar(field, value, where))


def _merge_message(message: Message, value: Any, where: str) -> None:
    full_name = _descriptor(message).full_name
    what = f"field {where!r}" if where else "the request body"
    if full_name in WELL_KNOWN:
        try:
            json_format.ParseDict(value, message)
        except (json_format.ParseError, TypeError, ValueError, AttributeError):
            raise TranscodeError(f"{what} is not a valid {full_name}") from None
    elif not isinstance(value, dict):
        raise TranscodeError(f"{what} must be a JSON object")
    else:
        _merge_object(message, value, where)


def _scalar(field: FieldDescriptor, value: Any, where: str) -> Any:
    """The Python value for a scalar or enum field from its JSON value."""
    kind = field.type
    if kind == F.TYPE_STRING:
        if not isinstance(value, str):
            raise TranscodeError(f"field {where!r} must be a string")
        return _utf8_text(value, where)
    if kind == F.TYPE_BYTES:
        if not isinstance(value, str):
            raise TranscodeError(f"field {where!r} must be a base64 string")
        return _base64(value, where)
    if kind == F.TYPE_BOOL:
        if not isinstance(value, bool):
            raise TranscodeError(f"field {where!r} must be true or false")
        return value
    if kind in INT_RANGES:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TranscodeError(f"field {where!r} must be an integer")
        return _in_range(kind, value, where)
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        if isinstance(value, str) and value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TranscodeError(f"field {where!r} must be a number")
        return _finite(kind, value, where)
    if kind == F.TYPE_ENUM:
        if _accepts_null(field) and value is None:
            return 0
        return _enum(field, value, where)
    raise TranscodeError(f"field {where!r} has an unsupported type")


def _utf8_text(value: str, where: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TranscodeError(f"field {where!r} is not valid UTF-8 text") from None
    return value


def _base64(value: str, where: str) -> bytes:
    standard = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise TranscodeError(f"field {where!r} must be a base64 string") from None


def _in_range(kind: int, value: int, where: str) -> int:
    low, high = INT_RANGES[kind]
    if not low <= value <= high:
        raise TranscodeError(f"field {where!r} must be between {low} and {high}")
    return value


def _finite(kind: int, value: float, where: str) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    limit = FLOAT32_MAX if kind == F.TYPE_FLOAT else 1.7976931348623157e308
    if not math.isfinite(number) or abs(number) > limit:
        raise TranscodeError(f"field {where!r} is out of range")
    return number


def _enum(field: FieldDescriptor, value: Any, where: str) -> int:
    assert field.enum_type is not None
    names = field.enum_type.values_by_name
    if not isinstance(value, str) or value not in names:
        choices = ", ".join(names)
        raise TranscodeError(f"field {where!r} must be one of: {choices}")
    return int(names[value].number)


# --- path variables and query parameters ----------------------------------------------------


def _proto_path(descriptor: Descriptor, dotted: str) -> list[FieldDescriptor]:
    fields = []
    current: Descriptor | None = descriptor
    for name in dotted.split("."):
        assert current is not None  # checked when the route was built
        field = current.fields_by_name[name]
        fields.append(field)
        current = field.message_type
    return fields


def _query_path(descriptor: Descriptor, key: str) -> list[FieldDescriptor] | None:
    """The fields a query parameter names (by JSON or proto name, dotted), or None."""
    fields = []
    current: Descriptor | None = descriptor
    for name in key.split("."):
        if current is None or current.full_name in WELL_KNOWN:
            return None
        field = _json_fields(current).get(name) or current.fields_by_name.get(name)
        if field is None:
            return None
        fields.append(field)
        current = None if field.is_repeated else field.message_type
    return fields


def _apply_query(message: Message, query: Iterable[tuple[str, str]], bound: set[str]) -> set[str]:
    """Set the fields the query names; return the proto names of the top-level fields set."""
    given: set[str] = set()
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        fields = _query_path(_descriptor(message), key)
        if fields is None:
            continue  # names no field: ignored, as grpc-gateway does
        dotted = ".".join(f.name for f in fields)
        if any(
            dotted == b or dotted.startswith(b + ".") or b.startswith(dotted + ".") for b in bound
        ):
            continue  # the path or the body sets this field
        _set_from_text(message, fields, values, f"query parameter {key!r}")
        given.add(fields[0].name)
    return given


def _set_from_text(
    message: Message, fields: Sequence[FieldDescriptor], values: Sequence[str], where: str
) -> None:
    for field in fields[:-1]:
        message = getattr(message, field.name)
    field = fields[-1]
    if _is_map(field):
        raise TranscodeError(f"{where} cannot set a map field")
    if field.is_repeated:
        items = getattr(message, field.name)
        for text in values:
            if field.message_type is not None:
                _message_from_text(items.add(), text, where)
            else:
                items.append(_scalar_from_text(field, text, where))
        return
    if len(values) > 1:
        raise TranscodeError(f"{where} is given more than once")
    if field.message_type is not None:
        sub = getattr(message, field.name)
        _message_from_text(sub, values[0], where)
        sub.SetInParent()
    else:
        setattr(message, field.name, _scalar_from_text(field, values[0], where))


def _message_from_text(message: Message, text: str, where: str) -> None:
    descriptor = _descriptor(message)
    if descriptor.full_name in WRAPPERS:
        inner = descriptor.fields_by_name["value"]
        setattr(message, "value", _scalar_from_text(inner, text, where))  # noqa: B010
    elif descriptor.full_name in TEXT_WELL_KNOWN:
        try:
            json_format.ParseDict(cast(Any, text), message)
        except (json_format.ParseError, TypeError, ValueError, AttributeError):
            raise TranscodeError(f"{where} is not a valid {descriptor.full_name}") from None
    else:
        raise TranscodeError(f"{where} names a message; send it in a JSON body")


def _scalar_from_text(field: FieldDescriptor, text: str, where: str) -> Any:
    """The Python value for a scalar or enum field from text (a path segment, a query value, a
    map key)."""
    kind = field.type
    if kind == F.TYPE_STRING:
        return _utf8_text(text, where)
    if kind == F.TYPE_BYTES:
        return _base64(text, where)
    if kind == F.TYPE_BOOL:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise TranscodeError(f"{where} must be true or false")
    if kind in INT_RANGES:
        if not _INTEGER_TEXT.fullmatch(text):
            raise TranscodeError(f"{where} must be an integer")
        return _in_range(kind, int(text), where)
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        if text in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text]
        try:
            number = float(text)
        except ValueError:
            raise TranscodeError(f"{where} must be a number") from None
        return _finite(kind, number, where)
    if kind == F.TYPE_ENUM:
        return _enum(field, text, where)
    raise TranscodeError(f"{where} has an unsupported type")


# --- message -> JSON ------------------------------------------------------------------------


def message_to_json(message: Message, response_body: str = "") -> Any:
    """The JSON value (ready for json.dumps) of a reply, or of its `response_body` field."""
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    descriptor = _descriptor(message)
    data = _numbers(descriptor, data)
    if not response_body:
        return data
    field = descriptor.fields_by_name[response_body]
    if field.json_name in data:
        return data[field.json_name]
    return {} if field.message_type is not None else None


def _numbers(descriptor: Descriptor, data: Any) -> Any:
    """`data` with 64-bit integers as JSON numbers (json_format prints them as strings)."""
    name = descriptor.full_name
    if name in ("google.protobuf.Int64Value", "google.protobuf.UInt64Value"):
        return int(data) if isinstance(data, str) else data
    if name in WELL_KNOWN or not isinstance(data, dict):
        return data
    for field in descriptor.fields:
        if field.json_name not in data:
            continue
        value = data[field.json_name]
        if _is_map(field):
            _, value_field = _entry_fields(field)
            data[field.json_name] = {k: _field_number(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            data[field.json_name] = [_field_number(field, v) for v in value]
        else:
            data[field.json_name] = _field_number(field, value)
    return data


def _field_number(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        return _numbers(field.message_type, value)
    if field.type in INT64_TYPES and isinstance(value, str):
        return int(value)
    return value
