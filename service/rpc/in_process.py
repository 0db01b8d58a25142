"""Calling a servicer's method without the gRPC server, with grpc.aio's semantics: the REST
gateway's in-process hop (`authsvc serve`; grpc-gateway's `Register...HandlerServer`).

`InProcessContext` is the part of `grpc.aio.ServicerContext` the servicers use: the metadata, the
deadline, `peer()` and `auth_context()` as gRPC reports them for the REST client, codes, details,
trailing metadata and aborts. `serve` runs one call as grpc.aio does; a status other than OK
leaves it as an `InProcessAbort`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]
Handler = Callable[[Message, "InProcessContext"], Any]


async def serve(handler: Handler, request: Message, context: InProcessContext, path: str) -> Any:
    """One call as grpc.aio runs it: a reply is OK unless the servicer set another code; an
    exception but an abort is logged and becomes UNKNOWN (or the code the servicer set)."""
    try:
        reply = await handler(request, context)
    except InProcessAbort:
        raise
    except Exception as exc:
        log.exception("Unexpected [%s] raised by servicer method [%s]", type(exc).__name__, path)
        code = context.code() or grpc.StatusCode.UNKNOWN
        code = grpc.StatusCode.UNKNOWN if code is grpc.StatusCode.OK else code
        details = f"Unexpected {type(exc)}: {exc}"
        raise InProcessAbort(code, details, context.trailing_metadata()) from None
    code = context.code()
    if code is not None and code is not grpc.StatusCode.OK:
        raise InProcessAbort(code, context.details() or "", context.trailing_metadata())
    return reply


class InProcessAbort(Exception):
    """A servicer ended its call with a status (grpc.aio's `AbortError`)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        super().__init__(code, details)
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


class InProcessContext:
    """One in-process call's context: `peer` is the REST client as gRPC names a peer ("unknown"
    when it is none), `peercert` its TLS certificate (`ssl.SSLSocket.getpeercert()`), if any."""

    in_process = True  # the call came through the gateway, which logs it (observability/calls.py)

    def __init__(self, metadata: Metadata, deadline: float, peer: str, peercert: Any) -> None:
        self._metadata, self._deadline = metadata, deadline
        self._peer, self._peercert = peer, peercert
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: Metadata = ()
        self.sent_initial_metadata: Metadata = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return auth_context(self._peercert)

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, Any]]) -> None:
        self.sent_initial_metadata = tuple(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        # As grpc.aio: empty trailing metadata keeps what set_trailing_metadata set.
        raise InProcessAbort(code, details, tuple(trailing_metadata) or self._trailing)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)


def auth_context(peercert: Any) -> dict[str, list[bytes]]:
    """What grpc's `ServicerContext.auth_context()` gives for a verified TLS client certificate
    (`ssl.SSLSocket.getpeercert()`), {} when there is none."""
    if not peercert:
        return {}
    subject = peercert.get("subject", ())
    names = [value.encode() for rdn in subject for key, value in rdn if key == "commonName"]
    sans = [value.encode() for _, value in peercert.get("subjectAltName", ())]
    context = {"transport_security_type": [b"ssl"]}
    if names:
        context["x509_common_name"] = names
    if sans:
        context["x509_subject_alternative_name"] = sans
    return context
