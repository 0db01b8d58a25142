"""Load generation (closed and open loop) and CPU accounting from /proc.

Every call returns a label: "OK", a gRPC status code name, "HTTP <status>", "client timeout" or
"connection error". A scenario reports how many calls ended with each, the latencies of the OK
ones, and the CPU time the server, the client (this process, all threads), the PostgreSQL
processes and everything else on the machine spent meanwhile, read from /proc directly (a few
fields of Linux's own accounting; psutil would be a dependency for no more than that).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc

CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")
OK = "OK"

Call = Callable[[int], Awaitable[str]]


async def grpc_label(call: Awaitable[Any]) -> str:
    """OK, or the status code's name."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return OK


async def http_label(
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    expect: Callable[[dict[str, Any]], bool],
    **kwargs: Any,
) -> str:
    """OK when the status is 200 and `expect(body)`, else "HTTP <status>" or the failure."""
    try:
        async with session.request(method, path, **kwargs) as reply:
            if reply.status != 200:
                await reply.read()
                return f"HTTP {reply.status}"
            return OK if expect(await reply.json()) else "HTTP 200 unexpected body"
    except TimeoutError:
        return "client timeout"
    except aiohttp.ClientError as exc:
        return f"connection error ({exc.__class__.__name__})"


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads), seconds; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root`, of its children it has reaped, and of its live children: a
    postmaster and every backend it ever had."""
    try:
        fields = Path(f"/proc/{root}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    total = sum(int(v) for v in fields[11:15]) / TICK  # utime stime cutime cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle (nor waiting for I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


class CpuMeter:
    """CPU spent by the server, the client, PostgreSQL and the rest, between two samples."""

    def __init__(self, server_pid: int, postgres_pid: int, *, server_tree: bool = False) -> None:
        """`server_tree`: the server is `server_pid` and its child processes (uvicorn's
        workers), counted as for PostgreSQL."""
        self.server_pid = server_pid
        self.postgres_pid = postgres_pid
        self._server_cpu = tree_cpu_seconds if server_tree else proc_cpu_seconds

    def sample(self) -> dict[str, float]:
        return {
            "t": time.perf_counter(),
            "server": self._server_cpu(self.server_pid),
            "client": time.process_time(),
            "postgres": tree_cpu_seconds(self.postgres_pid),
            "machine": machine_busy_seconds(),
        }

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        """CPU seconds of each, and each one's share of the machine (elapsed x cores)."""
        elapsed = b["t"] - a["t"]
        d = {k: b[k] - a[k] for k in ("server", "client", "postgres", "machine")}
        d["others"] = max(0.0, d["machine"] - d["server"] - d["client"] - d["postgres"])
        capacity = elapsed * CORES
        shares = {f"{k}_share": v / capacity for k, v in d.items()}
        return {"elapsed_s": elapsed} | {f"{k}_cpu_s": v for k, v in d.items()} | shares


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    index = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summary(
    labels: Counter[str], latencies: list[float], cpu: dict[str, float], window: float
) -> dict[str, Any]:
    requests = sum(labels.values())
    ok = labels.get(OK, 0)
    latencies.sort()
    result: dict[str, Any] = {
        "requests": requests,
        "ok": ok,
        "errors": {k: v for k, v in sorted(labels.items()) if k != OK},
        "ok_per_s": ok / window,
    }
    result |= {f"p{p}_ms": percentile(latencies, p) * 1000 for p in (50, 95, 99)}
    result["server_cpu_ms_per_ok"] = cpu["server_cpu_s"] / ok * 1000 if ok else float("nan")
    result["client_cpu_ms_per_request"] = cpu["client_cpu_s"] / max(requests, 1) * 1000
    return result | {"cpu": cpu}


async def closed_loop(
    call: Call, concurrency: int, seconds: float, meter: CpuMeter, warmup: int | None = None
) -> dict[str, Any]:
    """`concurrency` callers, each calling again as soon as its call ends, for `seconds`."""
    for i in range(concurrency if warmup is None else warmup):
        await call(i)  # connections, caches, statement preparation
    labels: Counter[str] = Counter()
    latencies: list[float] = []
    counter = iter(range(1 << 62))
    before = meter.sample()
    end = before["t"] + seconds

    async def caller() -> None:
        while time.perf_counter() < end:
            start = time.perf_counter()
            label = await call(next(counter))
            labels[label] += 1
            if label == OK:
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu = CpuMeter.delta(before, meter.sample())
    result = summary(labels, latencies, cpu, cpu["elapsed_s"])
    return {"mode": "closed", "concurrency": concurrency, "seconds": seconds} | result


async def open_loop(call: Call, rate: float, seconds: float, meter: CpuMeter) -> dict[str, Any]:
    """Calls started at `rate` per second for `seconds` whether or not earlier ones ended;
    `ok_per_s` is the goodput over the sending window."""
    labels: Counter[str] = Counter()
    latencies: list[float] = []

    async def one(i: int) -> None:
        start = time.perf_counter()
        label = await call(i)
        labels[label] += 1
        if label == OK:
            latencies.append(time.perf_counter() - start)

    before = meter.sample()
    tasks = []
    count = int(rate * seconds)
    for i in range(count):
        delay = before["t"] + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    sent = time.perf_counter() - before["t"]
    await asyncio.gather(*tasks)
    cpu = CpuMeter.delta(before, meter.sample())
    result = summary(labels, latencies, cpu, max(sent, seconds))
    return {"mode": "open", "offered_per_s": count / max(sent, seconds), "seconds": seconds} | (
        result
    )


async def until_idle(pid: int, limit: float = 15.0) -> float:
    """Seconds until `pid` uses under 10% of a core over 0.25 s (at most `limit`)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        cpu0 = proc_cpu_seconds(pid)
        await asyncio.sleep(0.25)
        if proc_cpu_seconds(pid) - cpu0 < 0.025:
            break
    return time.perf_counter() - start
