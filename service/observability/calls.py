"""What the servicers' wrapper (`rpc/status.py` `rpc_method`) reports of each call: the RPC
metrics, its status on its span when tracing is on, and, for a call that came over gRPC, its
log line. A REST request dispatched in process
goes through the same wrapper (counted once in the RPC metrics) but is logged by the gateway, as
one line with its route (`http.py`)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from service.observability import logs, metrics, tracing


@dataclass(frozen=True, slots=True)
class Call:
    stats: metrics.RpcStats
    full_method: str

    def ended(
        self, context: Any, request_id: str, code: str, reason: str | None, started: float
    ) -> None:
        seconds = time.perf_counter() - started
        self.stats.handled(code, reason, seconds)
        if tracing.is_on():
            tracing.rpc_ended(code, reason)
        if not getattr(context, "in_process", False):
            logs.log_call(
                "grpc", self.full_method, code, reason, seconds, request_id, _peer(context)
            )


def _peer(context: Any) -> str:
    try:
        return str(context.peer())
    except Exception:  # a context whose call has ended may refuse
        return "unknown"


_calls: dict[tuple[type | str, str], Call] = {}


def started(servicer: type | str, method: str, kind: str = "unary") -> Call:
    """Count the start of `method` (of grpc_type `kind`) on `servicer`'s service (the
    servicer's class, or the service's full name); the call reports its end."""
    call = _calls.get((servicer, method))
    if call is None:
        service = servicer if isinstance(servicer, str) else service_name(servicer)
        stats = metrics.rpc_stats(service, method, kind)
        call = _calls[(servicer, method)] = Call(stats, f"/{service}/{method}")
    call.stats.started.inc()
    return call


def service_name(servicer: type) -> str:
    """The full proto name of the service `servicer` implements, from the generated base class
    it derives from (`FooServiceServicer` in `x_pb2_grpc`, whose `x_pb2` describes `FooService`);
    the class's own name if it has none."""
    for base in servicer.__mro__:
        module = base.__module__
        if module.endswith("_pb2_grpc") and base.__name__.endswith("Servicer"):
            descriptor = getattr(sys.modules.get(module[: -len("_grpc")]), "DESCRIPTOR", None)
            service = descriptor and descriptor.services_by_name.get(
                base.__name__[: -len("Servicer")]
            )
            if service is not None:
                return str(service.full_name)
    return servicer.__name__


@contextmanager
def stream(
    servicer: type | str, method: str, kind: str, context: Any, request_id: Callable[[], str]
) -> Iterator[None]:
    """A streaming call counted and logged as `rpc_method` does a unary one: started now, ended
    with OK, CANCELLED (the client hung up, how a stream usually ends) or UNKNOWN."""
    call, begun, code = started(servicer, method, kind), time.perf_counter(), "OK"
    try:
        yield
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    except Exception:
        code = "UNKNOWN"
        raise
    finally:
        call.ended(context, request_id(), code, None, begun)
