from authsvc.v1 import http_options_pb2 as _http_options_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ReplacePasswordsRequest(_message.Message):
    __slots__ = ("new_password",)
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    new_password: str
    def __init__(self, new_password: _Optional[str] = ...) -> None: ...

class ReplacePasswordsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddPasswordRequest(_message.Message):
    __slots__ = ("new_password",)
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    new_password: str
    def __init__(self, new_password: _Optional[str] = ...) -> None: ...

class AddPasswordResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeletePasswordRequest(_message.Message):
    __slots__ = ("old_password",)
    OLD_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    old_password: str
    def __init__(self, old_password: _Optional[str] = ...) -> None: ...

class DeletePasswordResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
