"""The Node.js client (clients/node) against a real server: its own `node --test` suite in the
checkout, and the packed tarball installed into an empty folder, outside the repository, with
its TypeScript types checked by tsc."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from service import app
from tests.support import new_user

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"
PASSWORD = "node pw ✓"


async def execute(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, limit: float = 180
) -> tuple[int, str]:
    """Run a command for at most `limit` seconds; its exit status and output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=limit)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        raise AssertionError(f"{argv} timed out:\n" + output.decode(errors="replace")) from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command that must succeed; its output."""
    code, text = await execute(*argv, cwd=cwd, env=env)
    assert code == 0, f"{' '.join(argv)} exited {code}:\n{text}"
    return text


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    assert (NODE_CLIENT / "node_modules" / "typescript").is_dir(), (
        "clients/node/node_modules is incomplete: run `npm ci --prefix clients/node` (make install)"
    )


def expected_tests() -> int:
    """How many tests the Node suite declares (`test(` calls in test/*.js)."""
    sources = (path.read_text() for path in (NODE_CLIENT / "test").glob("*.js"))
    return sum(len(re.findall(r"^\s*test\(", source, re.MULTILINE)) for source in sources)


async def test_node_suite_passes(grpc_target: str, services: app.Services, delayed) -> None:
    """Every test the Node suite declares runs and passes (a run of nothing would exit 0 too)."""
    delayed_target, delayed_services = delayed
    user = await new_user(services, PASSWORD, prefix="node")
    slow = [await new_user(delayed_services, PASSWORD, prefix="node-retry") for _ in range(2)]
    output = await run(
        "node",
        "--test",
        "--test-reporter=tap",
        "test/",
        cwd=NODE_CLIENT,
        env={
            "AUTHSVC_TARGET": grpc_target,
            "AUTHSVC_TEST_USER": user.username,
            "AUTHSVC_TEST_PASSWORD": PASSWORD,
            "AUTHSVC_DELAYED_TARGET": delayed_target,
            "AUTHSVC_DELAYED_USERS": ",".join(u.username for u in slow),
        },
    )
    count = expected_tests()
    assert count >= 14
    counts = dict(re.findall(r"^# (tests|pass|fail|skipped|todo|cancelled) (\d+)$", output, re.M))
    assert counts == {
        "tests": str(count),
        "pass": str(count),
        "fail": "0",
        "skipped": "0",
        "todo": "0",
        "cancelled": "0",
    }, output


SMOKE = """
import { AuthClient, AuthsvcError, PROTO_DIR } from "@authsvc/client";

const client = new AuthClient(process.env.AUTHSVC_TARGET, { retry: true });
const { AUTHSVC_TEST_USER: user, AUTHSVC_TEST_PASSWORD: password } = process.env;
const token = await client.authorize(user, password);
const { active } = await client.verifyToken(token);
const { keys } = await client.getJwks();
let reason = null;
try {
  await client.authorize(user, "wrong");
} catch (error) {
  reason = error instanceof AuthsvcError ? error.reason : String(error);
}
client.close();
console.log(JSON.stringify({ active, keys: keys.length, reason, protoDir: PROTO_DIR }));
"""

TYPED = """
import { AuthClient, AuthsvcError, type Introspection, type Jwk } from "@authsvc/client";

async function main(target: string): Promise<void> {
  const client = new AuthClient(target, { timeoutMs: 5000, retry: { maxAttempts: 3 } });
  const token: string = await client.authorize("alice", "pw", { ttl: 60, timeoutMs: 1000 });
  const seen: Introspection = await client.verifyToken(token);
  const keys: Jwk[] = (await client.getJwks()).keys;
  const api = await client.issueApiToken("alice", "pw");
  const expires: number = api.expires;
  await client.addPassword("alice", "pw", "pw2", { timeoutMs: 100 });
  try {
    await client.deletePassword("alice", "pw2", "pw");
  } catch (error) {
    if (error instanceof AuthsvcError) {
      const wait: number | null = error.retryAfter;
      const id: string | null = error.requestId;
      const reason: string = error.reason;
      console.log(wait, id, reason);
    }
  }
  console.log(seen.active, keys.length, expires);
  client.close();
}

void main("127.0.0.1:1");
"""

# A deliberate misuse that the types must reject (so the check is shown to check something).
MISTYPED = """
import { AuthClient } from "@authsvc/client";
const client = new AuthClient("127.0.0.1:1");
const id: number = (await client.verifyToken("t")).active;
"""


@pytest.fixture(scope="module")
async def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder outside the repository with the packed tarball installed in it."""
    packs = tmp_path_factory.mktemp("node-pack")
    await run("npm", "pack", "--pack-destination", str(packs), "--silent", cwd=NODE_CLIENT)
    (tarball,) = packs.glob("*.tgz")
    assert not (NODE_CLIENT / "proto").exists(), "postpack left a proto copy in the checkout"
    folder = tmp_path_factory.mktemp("node-user")
    (folder / "package.json").write_text('{"name": "user", "private": true, "type": "module"}')
    await run(
        "npm",
        "install",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        str(tarball),
        cwd=folder,
    )
    return folder


async def test_packed_client_works_outside_the_repository(
    installed: Path, grpc_target: str, services: app.Services
) -> None:
    """The tarball installed into an empty folder calls the server on its bundled protos."""
    user = await new_user(services, PASSWORD, prefix="node-pack")
    (installed / "smoke.mjs").write_text(SMOKE)
    output = await run(
        "node",
        "smoke.mjs",
        cwd=installed,
        env={
            "AUTHSVC_TARGET": grpc_target,
            "AUTHSVC_TEST_USER": user.username,
            "AUTHSVC_TEST_PASSWORD": PASSWORD,
        },
    )
    result = json.loads(output.strip().splitlines()[-1])
    assert result["active"] is True and result["keys"] >= 1
    assert result["reason"] == "INVALID_CREDENTIALS"
    assert result["protoDir"] == str(installed / "node_modules" / "@authsvc" / "client" / "proto")


async def test_packed_types_check_with_tsc(installed: Path) -> None:
    """tsc --strict accepts a program using the packed index.d.ts, and rejects a misuse."""
    (installed / "typed.ts").write_text(TYPED)
    (installed / "mistyped.ts").write_text(MISTYPED)
    # skipLibCheck: checking @types/node and grpc-js's own declarations takes most of tsc's time
    # and tests nothing of ours; the programs still type-check against index.d.ts.
    options = {
        "strict": True,
        "noEmit": True,
        "module": "nodenext",
        "moduleResolution": "nodenext",
        "target": "es2022",
        "skipLibCheck": True,
        "typeRoots": [str(NODE_CLIENT / "node_modules" / "@types")],
        "types": ["node"],
    }
    config = {"compilerOptions": options, "files": ["typed.ts", "mistyped.ts"]}
    (installed / "tsconfig.json").write_text(json.dumps(config))
    tsc = str(NODE_CLIENT / "node_modules" / ".bin" / "tsc")
    code, output = await execute(tsc, "-p", ".", cwd=installed, limit=120)
    errors = re.findall(r"^(\S+)\(\d+,\d+\): error (TS\d+)", output, re.M)
    assert (code, errors) == (2, [("mistyped.ts", "TS2322")]), output
