"""The servicer context of an in-process call: the part of `grpc.aio.ServicerContext` that the
servicers and `service/rpc/status.py` use, with grpc.aio's semantics.

`abort` raises `InProcessAbort` (as grpc.aio raises `AbortError`) carrying the code, details and
trailing metadata; the dispatcher turns it into the same `RpcFailure` an `AioRpcError` gives a
channel. `peer()` is the REST client in gRPC's format, `auth_context()` its TLS certificate as
gRPC reports one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from service.gateway.client_address import ClientAddress, auth_context

Metadata = tuple[tuple[str, str | bytes], ...]


class InProcessAbort(Exception):
    """A servicer ended its call with a status (grpc.aio's `AbortError`)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class InProcessContext:
    """One call's context. `deadline` is on the event loop's clock."""

    # The call came through the REST gateway, which logs it (service/observability/calls.py).
    in_process = True

    __slots__ = (
        "_aborted",
        "_auth_context",
        "_cancelled",
        "_client",
        "_code",
        "_deadline",
        "_details",
        "_done",
        "_initial_metadata",
        "_metadata",
        "_trailing_metadata",
        "_transport",
    )

    def __init__(
        self,
        metadata: Metadata,
        deadline: float,
        client: ClientAddress | None,
        transport: asyncio.BaseTransport | None,
    ) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self._client = client
        self._transport = transport  # the HTTP connection's, for its TLS peer certificate
        self._auth_context: dict[str, list[bytes]] | None = None
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing_metadata: Metadata = ()
        self._initial_metadata: Metadata = ()
        self._done = False
        self._cancelled = False
        self._aborted = False

    # --- what the call sees -------------------------------------------------------------------

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._client.grpc_peer() if self._client is not None else "unknown"

    def auth_context(self) -> dict[str, list[bytes]]:
        if self._auth_context is None:
            transport = self._transport
            cert = transport.get_extra_info("peercert") if transport is not None else None
            self._auth_context = auth_context(cert)
        return self._auth_context

    def peer_identities(self) -> list[bytes] | None:
        context = self.auth_context()
        key = self.peer_identity_key()
        return context[key] if key is not None else None

    def peer_identity_key(self) -> str | None:
        context = self.auth_context()
        for key in ("x509_subject_alternative_name", "x509_common_name"):
            if key in context:
                return key
        return None

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    # --- what the call says back --------------------------------------------------------------

    async def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, Any]]) -> None:
        self._initial_metadata = tuple(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing_metadata = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing_metadata

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
        if self._aborted:
            raise grpc.aio.UsageError("Abort already called!")
        self._aborted = True
        # As grpc.aio: empty trailing metadata keeps what set_trailing_metadata set.
        if trailing_metadata:
            self._trailing_metadata = tuple(trailing_metadata)
        raise InProcessAbort(code, details, self._trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    # --- for the dispatcher -------------------------------------------------------------------

    def initial_metadata(self) -> Metadata:
        return self._initial_metadata

    def finish(self, *, cancelled: bool = False) -> None:
        self._done = True
        self._cancelled = cancelled
