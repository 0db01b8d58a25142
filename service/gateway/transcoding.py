"""JSON <-> protobuf messages (grpc-gateway's marshaler): protobuf's `json_format`, with a
strict pass in front of it; request bodies are decoded here too (UTF-8, no key twice, no NaN).

`json_format.ParseDict` builds the request, but it takes what the gateway refuses ("12" for an
integer, `true` for a number, an enum's number, proto names, `null`) and its errors quote the
value (a password, say). So the body is first checked against the descriptor, and a refusal
names the field, never its value: an unknown field (known by `json_name` only: the seeds'
`new_password`, `userName`), a wrong type, `null`, an integer out of range or with a fraction,
an enum not by name, an unpaired surrogate, a missing `(google.api.field_behavior) = REQUIRED`
field; json_format itself refuses two members of one oneof. Replies print every field, 64-bit
integers as JSON numbers (the seeds' `expires`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache, partial
from typing import Any, Final, cast

from google.api.field_behavior_pb2 import REQUIRED, field_behavior
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from service.gateway.errors import bad_request

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


def parse_json(raw: bytes) -> Any:
    """A request body's JSON value: UTF-8, no key twice in an object, no NaN or Infinity."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant)
    except UnicodeDecodeError:
        raise bad_request("the request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        where = f"(line {exc.lineno}, column {exc.colno})"
        raise bad_request(f"malformed JSON: {exc.msg} {where}") from None
    except (ValueError, RecursionError):  # NaN, Infinity; an integer of too many digits
        raise bad_request("malformed JSON") from None


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # GatewayError is no ValueError: json.loads lets it through
            raise bad_request(f"malformed JSON: key {key!r} appears twice")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def build_request(request_class: type[Message], body: Any) -> Message:
    """The request message from its parsed JSON body (`{}` when the request had none)."""
    descriptor = cast(Descriptor, request_class.DESCRIPTOR)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    _check_object(descriptor, body, "")
    try:
        return json_format.ParseDict(body, request_class())
    except json_format.ParseError:  # two members of one oneof; nothing else the check passes
        raise bad_request(f"the request is not a valid {descriptor.full_name}") from None


@cache
def _fields(descriptor: Descriptor) -> tuple[dict[str, FieldDescriptor], list[str]]:
    """The fields by JSON name; the names of those `(google.api.field_behavior) = REQUIRED`."""
    fields = {f.json_name: f for f in descriptor.fields}
    named = [k for k, f in fields.items() if REQUIRED in f.GetOptions().Extensions[field_behavior]]
    return fields, named


def _check_object(descriptor: Descriptor, obj: Mapping[str, Any], where: str) -> None:
    """Each field of `obj` checked, and every REQUIRED one there."""
    fields, required = _fields(descriptor)
    for key, value in obj.items():
        location = f"{where}.{key}" if where else key
        if (field := fields.get(key)) is None:
            raise bad_request(f"unknown field {location!r}")
        if not field.is_repeated or value is None:
            _check_value(field, value, location)
        elif not isinstance(value, list):
            raise bad_request(f"field {location!r} must be a JSON array")
        else:
            for i, item in enumerate(value):
                _check_value(field, item, f"{location}[{i}]")
    for name in required:
        if name not in obj:
            location = f"{where}.{name}" if where else name
            raise bad_request(f"missing required field {location!r}")


def _check_value(field: FieldDescriptor, value: Any, where: str) -> None:
    """One value of `field` (an item, for a repeated one): the JSON json_format should read."""
    label = f"field {where!r}"
    if value is None:
        raise bad_request(f"{label} must not be null")
    if field.message_type is not None:
        if not isinstance(value, dict):
            raise bad_request(f"{label} must be a JSON object")
        return _check_object(field.message_type, value, where)
    kind, enum = field.cpp_type, field.enum_type
    if kind in INT_RANGES and isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is 3, as ProtoJSON reads it
    types, what = _EXPECTED[kind]
    if enum is not None:
        what = "one of: " + ", ".join(enum.values_by_name)
    valid = isinstance(value, types) and (kind == F.CPPTYPE_BOOL or not isinstance(value, bool))
    if not valid or (enum is not None and value not in enum.values_by_name):
        raise bad_request(f"{label} must be {what}")
    if kind == F.CPPTYPE_STRING and re.search("[\ud800-\udfff]", value):
        raise bad_request(f"{label} is not valid UTF-8 text")
    low, high = INT_RANGES.get(kind, (0, 0))
    if kind in INT_RANGES and not low <= value <= high:
        raise bad_request(f"{label} must be between {low} and {high}")


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
