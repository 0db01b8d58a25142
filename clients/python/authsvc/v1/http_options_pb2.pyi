from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorBodyStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_BODY_STYLE_UNSPECIFIED: _ClassVar[ErrorBodyStyle]
    ERROR_BODY_STYLE_ERROR_CODE: _ClassVar[ErrorBodyStyle]
    ERROR_BODY_STYLE_STATUS: _ClassVar[ErrorBodyStyle]

class BasicCredentials(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASIC_CREDENTIALS_UNSPECIFIED: _ClassVar[BasicCredentials]
    BASIC_CREDENTIALS_REQUIRED: _ClassVar[BasicCredentials]
    BASIC_CREDENTIALS_OPTIONAL: _ClassVar[BasicCredentials]
ERROR_BODY_STYLE_UNSPECIFIED: ErrorBodyStyle
ERROR_BODY_STYLE_ERROR_CODE: ErrorBodyStyle
ERROR_BODY_STYLE_STATUS: ErrorBodyStyle
BASIC_CREDENTIALS_UNSPECIFIED: BasicCredentials
BASIC_CREDENTIALS_REQUIRED: BasicCredentials
BASIC_CREDENTIALS_OPTIONAL: BasicCredentials
ERROR_BODY_STYLE_FIELD_NUMBER: _ClassVar[int]
error_body_style: _descriptor.FieldDescriptor
BASIC_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
basic_credentials: _descriptor.FieldDescriptor
