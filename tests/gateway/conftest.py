"""Gateway fixtures: the real shim on a free loopback port, dispatching in process to the real
servicers as `authsvc serve` does (test_standalone.py covers the gRPC channel dispatcher)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import aiohttp
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_tools import protoc

from service import app
from service.config import Settings
from service.gateway.routes import Route, build_routes
from service.http_server import serving_gateway

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture(scope="module")
async def gateway_url(services: app.Services, settings: Settings) -> AsyncIterator[str]:
    """The base URL of a gateway over the module's servicers, in process."""
    dispatcher = app.in_process_gateway(app.build_servicers(services, settings))
    async with serving_gateway(dispatcher, "127.0.0.1:0", shutdown_timeout=1.0) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
async def http(gateway_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=gateway_url) as session:
        yield session


@pytest.fixture
def dead_target() -> str:
    """A loopback address nobody listens on (a port just bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def library_file(tmp_path_factory: pytest.TempPathFactory) -> FileDescriptor:
    """testdata/library.proto, compiled now into a pool of its own: an API that uses every HTTP
    rule feature the gateway serves (each method, verbs, bodies "*" or none)."""
    googleapis = Path(annotations_pb2.__file__).resolve().parents[2]
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    out = tmp_path_factory.mktemp("library") / "library.pb"
    code = protoc.main(
        [
            "protoc",
            f"-I{TESTDATA}",
            f"-I{googleapis}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "library.proto",
        ]
    )
    assert code == 0
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)
    return pool.FindFileByName("library.proto")


@pytest.fixture(scope="session")
def library_routes(library_file: FileDescriptor) -> list[Route]:
    return build_routes([library_file])
