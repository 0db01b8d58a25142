"""JSON <-> protobuf messages, strictly, with the protos' JSON names.

protobuf's `json_format` converts both ways. It takes what the gateway refuses ("12" for an
integer, `true` for a number, an enum's number, `null` anywhere, proto names), so a strict pre-pass
over the request's JSON comes first and refuses, naming the field: an unknown field (fields are
known by their `json_name` only: the seeds' `new_password`, `userName`), a wrong type, `null`
(except for google.protobuf.Value), an integer out of range or with a fraction, an enum not given
by name, two members of one oneof, text that is not UTF-8, bad base64, and a missing field marked
`(google.api.field_behavior) = REQUIRED` (the OpenAPI document promises them). 64-bit integers are
JSON numbers both ways (the seeds document `expires` as a number); well-known types keep their
ProtoJSON forms. Path variables and query parameters are text, turned into their field's JSON
value and merged with the body (the path last: it wins), then one `ParseDict` builds the message.
A query parameter names a field by its JSON or proto name, dotted for nested fields, repeated for
repeated ones; one naming no field is ignored, as grpc-gateway does, so a cache-buster cannot
break a call. Replies print every field, even at its default value (`"active": false`).
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
from google.api.field_behavior_pb2 import REQUIRED
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from service.gateway.routes import Route

F = FieldDescriptor

WRAPPERS: Final = frozenset(
    f"google.protobuf.{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Types with a special JSON form, checked and parsed by json_format; those in TEXT_WELL_KNOWN
# can be written as one query or path parameter. Empty is an ordinary `{}`.
TEXT_WELL_KNOWN: Final = WRAPPERS | {
    f"google.protobuf.{n}" for n in ("Timestamp", "Duration", "FieldMask")
}
WELL_KNOWN: Final = TEXT_WELL_KNOWN | {
    f"google.protobuf.{n}" for n in ("Any", "Struct", "Value", "ListValue")
}

# Integer ranges by C++ type (int32, sint32 and sfixed32 share one; enums have their own).
INT_RANGES: Final = {
    F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    F.CPPTYPE_UINT32: (0, 2**32 - 1),
    F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_INT64: Final = frozenset({F.CPPTYPE_INT64, F.CPPTYPE_UINT64})
FLOAT_LIMITS: Final = {
    F.CPPTYPE_FLOAT: 3.4028234663852886e38,
    F.CPPTYPE_DOUBLE: 1.7976931348623157e308,
}
# The JSON values each (C++) type of field takes, and how to say so.
_EXPECTED: Final[dict[int, tuple[type | tuple[type, ...], str]]] = {
    F.CPPTYPE_STRING: (str, "a string"),
    F.CPPTYPE_BOOL: (bool, "true or false"),
    F.CPPTYPE_ENUM: (str, "an enum name"),
    F.CPPTYPE_FLOAT: ((int, float), "a number"),
    F.CPPTYPE_DOUBLE: ((int, float), "a number"),
    **dict.fromkeys(INT_RANGES, (int, "an integer")),
}
_UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")
_SPECIAL_FLOATS: Final = frozenset({"NaN", "Infinity", "-Infinity"})  # ProtoJSON's spellings
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
    descriptor = cast(Descriptor, route.request_class.DESCRIPTOR)
    bound = set(route.path_fields)
    data: dict[str, Any] = {}
    if route.body == "*":
        if body is NO_BODY:
            body = {}
        if not isinstance(body, dict):
            raise TranscodeError("the request body must be a JSON object")
        data = _object(descriptor, body, "", _exempt(bound, ""))
    else:
        if route.body:
            bound.add(route.body)
            field = descriptor.fields_by_name[route.body]
            if body is not NO_BODY:  # a message body's errors are named from its top
                where = "" if field.message_type and not field.is_repeated else field.json_name
                data[field.json_name] = _field(field, body, where, _exempt(bound, route.body))
            elif field in _required(descriptor):
                raise TranscodeError("the request body is required")
        given = _query(descriptor, query, bound, data)
        for field in _required(descriptor):
            if field.name not in given and not _is_bound(field.name, bound):
                raise TranscodeError(f"missing required query parameter {field.json_name!r}")
    for name, raw in path_values.items():
        try:
            text = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise TranscodeError(f"path parameter {name!r} is not valid UTF-8") from None
        fields = _field_path(descriptor, name.split("."), by_json_name=False)
        assert fields is not None  # checked when the route was built
        _put(data, fields, _leaf(fields[-1], [text], f"path parameter {name!r}"))
    try:
        return json_format.ParseDict(data, route.request_class())
    except json_format.ParseError:  # the pre-pass is meant to refuse everything first
        raise TranscodeError(f"the request is not a valid {descriptor.full_name}") from None


# --- the strict pre-pass: the JSON body, checked and made canonical for json_format ------------


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
    behavior = field_behavior_pb2.field_behavior
    return tuple(f for f in descriptor.fields if REQUIRED in f.GetOptions().Extensions[behavior])


@cache
def _json_fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.json_name: f for f in descriptor.fields}


def is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return field.is_repeated and entry is not None and entry.GetOptions().map_entry


def _accepts_null(field: FieldDescriptor) -> bool:
    if field.message_type is not None:
        return field.message_type.full_name == "google.protobuf.Value"
    return field.enum_type is not None and field.enum_type.full_name == "google.protobuf.NullValue"


def _object(
    descriptor: Descriptor, obj: Mapping[str, Any], where: str, exempt: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The fields named in `obj`; every REQUIRED field but those in `exempt` (set by the path)
    must be among them."""
    fields = _json_fields(descriptor)
    oneofs: dict[str, str] = {}
    out = {}
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
        out[key] = _field(field, value, location)
    for required in _required(descriptor):
        if required.json_name not in obj and required.name not in exempt:
            location = f"{where}.{required.json_name}" if where else required.json_name
            raise TranscodeError(f"missing required field {location!r}")
    return out


def _label(where: str) -> str:
    return f"field {where!r}" if where else "the request body"


def _field(
    field: FieldDescriptor, value: Any, where: str, exempt: frozenset[str] = frozenset()
) -> Any:
    """A field's JSON value: a map, a list or one value."""
    if value is None and not _accepts_null(field):
        raise TranscodeError(f"{_label(where)} must not be null")
    if is_map(field):
        if not isinstance(value, dict):
            raise TranscodeError(f"{_label(where)} must be a JSON object")
        entry = field.message_type
        assert entry is not None
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        out = {}
        for raw_key, item in value.items():
            item_where = f"{where}[{raw_key!r}]"
            label = f"field {item_where!r}"
            key = _value(key_field, _from_text(key_field, raw_key, label), item_where)
            # json_format takes map keys as text, booleans only as "true" and "false"
            out[str(key).lower() if isinstance(key, bool) else str(key)] = _value(
                value_field, item, item_where
            )
        return out
    if field.is_repeated:
        if not isinstance(value, list):
            raise TranscodeError(f"{_label(where)} must be a JSON array")
        return [_value(field, item, f"{where}[{index}]") for index, item in enumerate(value)]
    return _value(field, value, where, exempt=exempt)


def _value(
    field: FieldDescriptor,
    value: Any,
    where: str,
    label: str = "",
    exempt: frozenset[str] = frozenset(),
) -> Any:
    """One value of `field` (an item, for a repeated one), checked and made canonical."""
    label = label or _label(where)
    if value is None and not _accepts_null(field):
        raise TranscodeError(f"{label} must not be null")
    message = field.message_type
    if message is not None:
        if message.full_name in WELL_KNOWN:
            try:
                json_format.ParseDict(value, message_factory.GetMessageClass(message)())
            except (json_format.ParseError, TypeError, ValueError, AttributeError):
                raise TranscodeError(f"{label} is not a valid {message.full_name}") from None
            return value
        if not isinstance(value, dict):
            raise TranscodeError(f"{label} must be a JSON object")
        return _object(message, value, where, exempt)
    kind = field.cpp_type
    if kind in INT_RANGES and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind in FLOAT_LIMITS and isinstance(value, str) and value in _SPECIAL_FLOATS:
        return value
    types, what = _EXPECTED[kind]
    if field.enum_type is not None:
        if value is None:  # google.protobuf.NullValue
            return value
        what = "one of: " + ", ".join(field.enum_type.values_by_name)
    elif field.type == F.TYPE_BYTES:
        what = "a base64 string"
    valid = isinstance(value, types) and (kind == F.CPPTYPE_BOOL or not isinstance(value, bool))
    if not valid or (field.enum_type is not None and value not in field.enum_type.values_by_name):
        raise TranscodeError(f"{label} must be {what}")
    if field.type == F.TYPE_BYTES:
        # json_format's decoding skips characters outside the alphabet; this refuses them.
        standard = value.replace("-", "+").replace("_", "/")
        try:
            data = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise TranscodeError(f"{label} must be {what}") from None
        return base64.urlsafe_b64encode(data).decode()
    if kind == F.CPPTYPE_STRING and _UNPAIRED_SURROGATE.search(value):
        raise TranscodeError(f"{label} is not valid UTF-8 text")
    if kind in INT_RANGES:
        return _in_range(kind, value, label)
    if kind in FLOAT_LIMITS:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or abs(number) > FLOAT_LIMITS[kind]:
            raise TranscodeError(f"{label} is out of range")
        return number
    return value


def _in_range(kind: int, value: int, label: str) -> int:
    low, high = INT_RANGES[kind]
    if not low <= value <= high:
        raise TranscodeError(f"{label} must be between {low} and {high}")
    return value


# --- path variables and query parameters: text -> JSON values --------------------------------


def _field_path(
    descriptor: Descriptor, names: Sequence[str], by_json_name: bool = True
) -> list[FieldDescriptor] | None:
    """The fields a dotted name walks through (a query parameter's may use JSON or proto names),
    or None if it names no field."""
    fields = []
    current: Descriptor | None = descriptor
    for name in names:
        if current is None or current.full_name in WELL_KNOWN:
            return None
        field = current.fields_by_name.get(name)
        if by_json_name:
            field = _json_fields(current).get(name) or field
        if field is None:
            return None
        fields.append(field)
        current = None if field.is_repeated else field.message_type
    return fields


def _query(
    descriptor: Descriptor, query: Iterable[tuple[str, str]], bound: set[str], data: dict[str, Any]
) -> set[str]:
    """Put the fields the query names into `data`; the proto names of the top-level ones set."""
    given: set[str] = set()
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        fields = _field_path(descriptor, key.split("."))
        if fields is None:
            continue  # names no field: ignored, as grpc-gateway does
        dotted = ".".join(f.name for f in fields)
        if any(
            dotted == b or dotted.startswith(b + ".") or b.startswith(dotted + ".") for b in bound
        ):
            continue  # the path or the body sets this field
        _put(data, fields, _leaf(fields[-1], values, f"query parameter {key!r}"))
        given.add(fields[0].name)
    return given


def _put(data: dict[str, Any], fields: Sequence[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        data = data.setdefault(field.json_name, {})
    data[fields[-1].json_name] = value


def _leaf(field: FieldDescriptor, texts: Sequence[str], label: str) -> Any:
    """The JSON value of a field given as text, once or (repeated fields) more."""
    if is_map(field):
        raise TranscodeError(f"{label} cannot set a map field")
    if not field.is_repeated and len(texts) > 1:
        raise TranscodeError(f"{label} is given more than once")
    values = [_value(field, _from_text(field, text, label), label, label) for text in texts]
    return values if field.is_repeated else values[0]


def _from_text(field: FieldDescriptor, text: str, label: str) -> Any:
    """The JSON value a path segment, query value or map key stands for (checked by `_value`)."""
    message = field.message_type
    if message is not None:
        if message.full_name in WRAPPERS:
            inner = message.fields_by_name["value"]
            return _value(inner, _from_text(inner, text, label), label, label)
        if message.full_name in TEXT_WELL_KNOWN:
            return text
        raise TranscodeError(f"{label} names a message; send it in a JSON body")
    if field.cpp_type == F.CPPTYPE_BOOL:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise TranscodeError(f"{label} must be true or false")
    if field.cpp_type in INT_RANGES:
        if not _INTEGER_TEXT.fullmatch(text):
            raise TranscodeError(f"{label} must be an integer")
        return int(text)
    if field.cpp_type in FLOAT_LIMITS and text not in _SPECIAL_FLOATS:
        try:
            return float(text)
        except ValueError:
            raise TranscodeError(f"{label} must be a number") from None
    return text  # strings, bytes, enums and special floats stay text


# --- message -> JSON ------------------------------------------------------------------------


def message_to_json(message: Message, response_body: str = "") -> Any:
    """The JSON value (ready for json.dumps) of a reply, or of its `response_body` field."""
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    data = _numbers(descriptor, data)
    if not response_body:
        return data
    field = descriptor.fields_by_name[response_body]
    if field.json_name in data:
        return data[field.json_name]
    return {} if field.message_type is not None else None


def _numbers(descriptor: Descriptor | None, data: Any, kind: int = F.CPPTYPE_MESSAGE) -> Any:
    """`data` with 64-bit integers as JSON numbers (json_format prints them as strings)."""
    if descriptor is None:
        return int(data) if kind in _INT64 and isinstance(data, str) else data
    if descriptor.full_name in ("google.protobuf.Int64Value", "google.protobuf.UInt64Value"):
        return int(data) if isinstance(data, str) else data
    if descriptor.full_name in WELL_KNOWN or not isinstance(data, dict):
        return data
    for field in descriptor.fields:
        if (value := data.get(field.json_name)) is None:
            continue
        if is_map(field):
            item = field.message_type.fields_by_name["value"]  # type: ignore[union-attr]
            value = {k: _numbers(item.message_type, v, item.cpp_type) for k, v in value.items()}
        elif field.is_repeated:
            value = [_numbers(field.message_type, v, field.cpp_type) for v in value]
        else:
            value = _numbers(field.message_type, value, field.cpp_type)
        data[field.json_name] = value
    return data
