"""The Node.js client (clients/node) against a real server, through `node --test`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.support import new_user

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"


async def test_node_client(grpc_target, services) -> None:
    """The Node client's own test suite passes against this server with a fresh user."""
    assert (NODE_CLIENT / "node_modules").is_dir(), (
        "clients/node/node_modules is missing: run `npm ci --prefix clients/node` (make install)"
    )
    password = "node pw ✓"
    user = await new_user(services, password, prefix="node")
    env = {
        **os.environ,
        "AUTHSVC_TARGET": grpc_target,
        "AUTHSVC_TEST_USER": user.username,
        "AUTHSVC_TEST_PASSWORD": password,
        "NO_COLOR": "1",
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        "--test",
        "clients/node/test/",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        raise AssertionError("node --test timed out:\n" + output.decode(errors="replace")) from None
    assert process.returncode == 0, f"node --test exited {process.returncode}:\n" + output.decode(
        errors="replace"
    )
