"""grpc.health.v1: SERVING only while the database answers, so a load balancer (and the
gateway's /readyz) can take a replica out when its database is gone.

Built on grpcio-health-checking's asyncio servicer, which keeps the status per service name and
implements the spec's Check (NOT_FOUND for a name it does not know) and Watch (the status now,
then each change). What it does not know is when to change a status: here a database probe
`set()`s it, for "" (the whole server) and each authsvc service by its full name alike. Check
probes first, so it answers for the database as it is now; while any Watch stream is open, a
probe runs every `probe_seconds` to notice changes nobody asked about.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import grpc
from authsvc.v1 import auth_service_pb2, password_service_pb2, token_service_pb2
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio

from service.errors import AuthError, Reason
from service.observability import calls
from service.rpc.status import request_id_of, set_deadline

log = logging.getLogger(__name__)
ServingStatus = health_pb2.HealthCheckResponse.ServingStatus

# The names a health check may ask about: "" (the server) and every authsvc service.
SERVICE_NAMES = (
    "",
    *(
        service.full_name
        for module in (auth_service_pb2, password_service_pb2, token_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    ),
)
PROBE_SECONDS = 5.0


class HealthServicer(aio.HealthServicer):
    def __init__(
        self,
        database_ready: Callable[[], Awaitable[None]],
        services: Iterable[str] = SERVICE_NAMES,
        probe_seconds: float = PROBE_SECONDS,
    ) -> None:
        super().__init__()
        self._database_ready = database_ready
        self._names = tuple(services)
        self._probe_seconds = probe_seconds
        # Not SERVING until a probe says so.
        self._server_status = dict.fromkeys(self._names, ServingStatus.NOT_SERVING)
        self._last: int | None = None  # a ServingStatus value
        self._watchers = 0
        self._prober: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        # Counted and logged as every RPC is (rpc_method does it for authsvc's own servicers).
        call, started = calls.started(type(self), "Check"), time.perf_counter()
        request_id = request_id_of(context)
        if request.service not in self._names:
            call.ended(context, request_id, "NOT_FOUND", None, started)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        set_deadline(context)  # the probe's database timeout follows the caller's deadline
        try:
            await self.probe()
            reply = await super().Check(request, context)
        except asyncio.CancelledError:
            call.ended(context, request_id, "CANCELLED", None, started)
            raise
        call.ended(context, request_id, "OK", None, started)
        return reply

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        with calls.stream(
            type(self), "Watch", "server_stream", context, lambda: request_id_of(context)
        ):
            await self._watch(request, context)

    async def _watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        if request.service in self._names:
            await self.probe()  # the first answer is the status now, not the last one seen
        self._watchers += 1
        if self._prober is None:
            self._prober = asyncio.create_task(self._probe_while_watched())
        written = _Written(context)
        streaming = asyncio.create_task(super().Watch(request, written))
        closing = asyncio.create_task(self._closing.wait())
        try:
            await asyncio.wait((streaming, closing), return_when=asyncio.FIRST_COMPLETED)
            if not closing.done():
                await streaming  # it ended by itself only by failing: raise its error
                return
            # Shutting down: the library's stream says NOT_SERVING; then end it, so that it
            # does not hold the server's drain for its whole grace period.
            if request.service in self._names:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await written.not_serving.wait()
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streaming
            if request.service in self._names and not written.not_serving.is_set():
                await context.write(
                    health_pb2.HealthCheckResponse(status=ServingStatus.NOT_SERVING)
                )
        finally:
            streaming.cancel()
            closing.cancel()
            self._watchers -= 1
            if self._watchers == 0 and self._prober is not None:
                self._prober.cancel()
                self._prober = None

    async def probe(self) -> None:
        """Ping the database and set every name's status from the answer."""
        try:
            await self._database_ready()
            status = ServingStatus.SERVING
            problem = ""
        except AuthError as exc:
            if exc.reason is Reason.DEADLINE_EXCEEDED:
                return  # the caller's own deadline cut it short: that says nothing of the database
            status, problem = ServingStatus.NOT_SERVING, exc.message
        except Exception:  # a health check answers; it never fails the call
            log.exception("health probe failed")
            status, problem = ServingStatus.NOT_SERVING, "probe failed"
        if status != self._last:  # a line per change, not per probe
            if status == ServingStatus.SERVING:
                log.info("health: SERVING")
            else:
                log.warning("health: NOT_SERVING (%s)", problem)
            self._last = status
        for name in self._names:
            await self.set(name, status)

    async def shutdown(self) -> None:
        """Answer NOT_SERVING from now on, and end the Watch streams after telling them so."""
        await self.enter_graceful_shutdown()
        self._closing.set()

    async def _probe_while_watched(self) -> None:
        while True:
            await asyncio.sleep(self._probe_seconds)
            await self.probe()


class _Written:
    """The context as the library's Watch uses it (only `write`), noting NOT_SERVING sent."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self.not_serving = asyncio.Event()

    async def write(self, reply: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(reply)
        if reply.status == ServingStatus.NOT_SERVING:
            self.not_serving.set()
