"""grpc.health.v1: SERVING only while the database answers, so a load balancer (and the
gateway's /readyz) can take a replica out when its database is gone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.errors import AuthError

log = logging.getLogger(__name__)
ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, database_ready: Callable[[], Awaitable[None]]) -> None:
        self._database_ready = database_ready

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        try:
            await self._database_ready()
        except AuthError as exc:
            log.warning("health check: %s", exc.message)
            return health_pb2.HealthCheckResponse(status=ServingStatus.NOT_SERVING)
        except Exception:  # a health check answers; it never fails the call
            log.exception("health check failed")
            return health_pb2.HealthCheckResponse(status=ServingStatus.NOT_SERVING)
        return health_pb2.HealthCheckResponse(status=ServingStatus.SERVING)
