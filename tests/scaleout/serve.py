"""`authsvc serve` in a process of its own, on free loopback ports, until it reports SERVING."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.scaleout.pgbouncer import free_port

START_TIMEOUT = 60.0


def serving_now(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def serving_process(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """Yields (gRPC port, HTTP port) once the server is SERVING; on exit SIGTERM, which must
    end it with status 0."""
    grpc_port, http_port = free_port(), free_port()
    env = {
        **env,
        "AUTHSVC_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "AUTHSVC_HTTP_ADDR": f"127.0.0.1:{http_port}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not serving_now(grpc_port):
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield grpc_port, http_port
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
        assert server.returncode == 0, stderr
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
