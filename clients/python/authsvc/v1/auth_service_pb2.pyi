from google.api import annotations_pb2 as _annotations_pb2
from authsvc.v1 import http_options_pb2 as _http_options_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AuthorizeRequest(_message.Message):
    __slots__ = ("username", "password", "ttl")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    ttl: int
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., ttl: _Optional[int] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("access_token",)
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    def __init__(self, access_token: _Optional[str] = ...) -> None: ...

class IssueApiTokenRequest(_message.Message):
    __slots__ = ("user_name", "pwd")
    USER_NAME_FIELD_NUMBER: _ClassVar[int]
    PWD_FIELD_NUMBER: _ClassVar[int]
    user_name: str
    pwd: str
    def __init__(self, user_name: _Optional[str] = ..., pwd: _Optional[str] = ...) -> None: ...

class IssueApiTokenResponse(_message.Message):
    __slots__ = ("api_token", "expires", "status")
    API_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    api_token: str
    expires: int
    status: int
    def __init__(self, api_token: _Optional[str] = ..., expires: _Optional[int] = ..., status: _Optional[int] = ...) -> None: ...
