"""Property-based: schemathesis drives the live gateway from the gateway's own OpenAPI document.

Schemathesis calls the API synchronously from the test's thread, while the session's event loop
is idle, so the stack it tests (database pool, gRPC server, gateway) runs on an event loop of
its own in a background thread, on the module's real database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service import app
from service.apidocs.openapi import openapi_document
from service.config import Settings
from service.http_server import serving_gateway

USERNAME, PASSWORD = "schemathesis", "fuzz me"
MAX_EXAMPLES = 40


class LiveStack:
    """The service and its gateway on an event loop in a thread of their own."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-stack", daemon=True)

    def start(self) -> str:
        """Start, and return the gateway's base URL once it answers."""
        self._thread.start()
        return self._ready.result(timeout=60)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        settings = replace(self._settings, grpc_addr="127.0.0.1:0")
        try:
            async with (
                app.open_database(settings) as db,
                app.open_services(db, settings) as services,
            ):
                await services.keys.load()
                await services.users.create(USERNAME, PASSWORD)
                dispatcher = app.in_process_gateway(app.build_servicers(services, settings))
                async with serving_gateway(
                    dispatcher, "127.0.0.1:0", shutdown_timeout=1.0
                ) as http_port:
                    self._ready.set_result(f"http://127.0.0.1:{http_port}")
                    await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise


@pytest.fixture(scope="module")
def live_gateway(settings: Settings) -> Iterator[str]:
    stack = LiveStack(settings)
    url = stack.start()
    try:
        yield url
    finally:
        stack.stop()


# The document is built from the descriptors, so it exists at import time, as schemathesis's
# pytest integration needs; the live gateway serves the same one (see test_openapi.py).
schema = schemathesis.openapi.from_dict(openapi_document())
# A real user's Basic credentials, so successes are exercised too (until a PUT replaces them).
schema.config.update(basic_auth=(USERNAME, PASSWORD))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_gateway_conforms_to_its_document(case: schemathesis.Case, live_gateway: str) -> None:
    """No input gives a 5xx; every answer's status, headers, content type and body conform to
    the document; invalid input is refused with a 4xx."""
    case.call_and_validate(
        base_url=live_gateway,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
    )
