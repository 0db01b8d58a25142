"""The compiled load generator (bench/loadgen, Go), driven from here; the Python one in load.py
is the fallback when Go is missing.

Why: the load runs on the machine it measures. The Python generator (grpc.aio, aiohttp) spent
about 1 ms of CPU per login; at Keycloak's argon2 cost (about 15 ms a hash) that alone was several
percent of the hashing ceiling it is compared with. A Go client costs a fraction of that. Either
way the generator's CPU is measured and counted as the client's.

Built like the repository's other Go code: offline, GOPATH mode, on Debian's packaged gRPC
(`GO111MODULE=off GOPATH=tmp:/usr/share/gocode`, as the Makefile's `go-cache`), with the Go
client's generated stubs (clients/go/authsvcv1).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import CORES, CpuMeter, summary

ROOT = Path(__file__).resolve().parent.parent
_IMPORT_ROOT = "authsvc.example"  # the Go client's import path (clients/go/go.mod)


@dataclass(frozen=True)
class GoCall:
    """What the generator calls: `transport` "grpc" (`call` authorize or verify) or "http"
    (`call` the HTTP method, on `path`, OK when the reply's JSON member `expect` is truthy)."""

    transport: str
    target: str
    call: str
    path: str = ""
    # Request bodies, used in turn (JSON, or `content_type`).
    bodies: tuple[str, ...] = field(default=(), repr=False)
    content_type: str = ""
    expect: str = ""
    token: str = ""
    authorization: tuple[str, ...] = field(default=(), repr=False)

    def args(self) -> list[str]:
        args = [f"-transport={self.transport}", f"-target={self.target}", f"-call={self.call}"]
        if self.path:
            args.append(f"-path={self.path}")
        if self.bodies:
            args.append("-body=" + "\n".join(self.bodies))
        if self.content_type:
            args.append(f"-content-type={self.content_type}")
        if self.expect:
            args.append(f"-expect={self.expect}")
        if self.token:
            args.append(f"-token={self.token}")
        if self.authorization:
            args.append("-authorization=" + "\n".join(self.authorization))
        return args


def add_client_cpu(cpu: dict[str, float], seconds: float) -> dict[str, float]:
    """`cpu` (CpuMeter.delta) with `seconds` more of client CPU (the generator's, a child
    process), taken from the 'others' it had been counted in."""
    out = dict(cpu)
    out["client_cpu_s"] += seconds
    out["others_cpu_s"] = max(
        0.0,
        out["machine_cpu_s"] - out["server_cpu_s"] - out["client_cpu_s"] - out["postgres_cpu_s"],
    )
    capacity = out["elapsed_s"] * CORES
    for key in ("client", "others"):
        out[f"{key}_share"] = out[f"{key}_cpu_s"] / capacity
    return out


class GoLoad:
    """The generator binary; `build` returns None (and why) when it cannot be built."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    @staticmethod
    async def build(workdir: Path) -> tuple[GoLoad | None, str]:
        go = shutil.which("go")
        if go is None:
            return None, "Go is not installed: the Python load generator is used"
        gopath = Path(tempfile.mkdtemp(prefix="gopath-", dir=workdir))
        src = gopath / "src" / _IMPORT_ROOT
        shutil.copytree(ROOT / "clients" / "go", src / "clients" / "go")
        shutil.copytree(ROOT / "bench" / "loadgen", src / "bench" / "loadgen")
        binary = workdir / "loadgen"
        env = os.environ | {"GO111MODULE": "off", "GOPATH": f"{gopath}:/usr/share/gocode"}
        proc = await asyncio.create_subprocess_exec(
            go,
            "build",
            "-o",
            str(binary),
            ".",
            cwd=src / "bench" / "loadgen",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            last = out.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return None, f"the Go load generator did not build ({last[0]}): Python load is used"
        return GoLoad(binary), "load from the Go generator (bench/loadgen)"

    async def _run(self, call: GoCall, extra: list[str], meter: CpuMeter) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            str(self.binary),
            *call.args(),
            *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # the latencies of every OK call come back on one line
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if (await proc.stdout.readline()).strip() != b"ready":
                raise RuntimeError(f"load generator failed to start ({call.transport})")
            before = meter.sample()
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            line = await proc.stdout.readline()
            after = meter.sample()
            raw = json.loads(line)
        finally:
            if proc.returncode is None:
                await proc.wait()
        return {"raw": raw, "cpu": add_client_cpu(CpuMeter.delta(before, after), raw["cpu_s"])}

    async def closed_loop(
        self, call: GoCall, concurrency: int, seconds: float, meter: CpuMeter
    ) -> dict[str, Any]:
        """As load.closed_loop, the calls made by the generator."""
        args = [f"-concurrency={concurrency}", f"-seconds={seconds}"]
        run = await self._run(call, args, meter)
        raw, cpu = run["raw"], run["cpu"]
        result = summary(Counter(raw["labels"]), raw["latencies"] or [], cpu, cpu["elapsed_s"])
        head = {"mode": "closed", "concurrency": concurrency, "seconds": seconds, "load": "go"}
        return head | result | {"generator_cpu_s": raw["cpu_s"]}

    async def open_loop(
        self, call: GoCall, rate: float, seconds: float, deadline: float, meter: CpuMeter
    ) -> dict[str, Any]:
        """As load.open_loop with a `deadline` on every call."""
        args = [f"-rate={rate}", f"-seconds={seconds}", f"-deadline={deadline}", "-warmup=0"]
        run = await self._run(call, args, meter)
        raw, cpu = run["raw"], run["cpu"]
        window = max(raw["sent_s"], seconds)
        result = summary(Counter(raw["labels"]), raw["latencies"] or [], cpu, window)
        head = {"mode": "open", "offered_per_s": raw["offered"] / window, "seconds": seconds}
        return head | {"load": "go"} | result | {"generator_cpu_s": raw["cpu_s"]}
