"""Tokens from a live server on the default algorithm verify with the common JWT libraries at
their default settings: PyJWT and joserfc (Python), jose and jsonwebtoken (Node), golang-jwt
(Go). Each gets only a fresh token, the server's JWKS, the issuer and the audience."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from authsvc.client import AsyncAuthClient
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from service.config import Settings
from tests.support import new_user

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"
GOLANG_JWT = Path(__file__).resolve().parent / "golangjwt"
DEFAULT_ALGORITHM = Settings().jwt_algorithm
ISSUER = AUDIENCE = "authsvc"


@dataclass(frozen=True)
class Fresh:
    token: str
    jwks: dict[str, list[dict[str, str]]]
    jwks_file: Path


@pytest.fixture(scope="module")
async def fresh(grpc_target, services, tmp_path_factory) -> Fresh:
    """A token just issued by the module's server (default settings) and its JWKS."""
    user = await new_user(services, "interop pw", prefix="interop")
    async with AsyncAuthClient(grpc_target) as client:
        token = await client.authorize(user.username, "interop pw")
        jwks = await client.get_jwks()
    jwks_file = tmp_path_factory.mktemp("interop") / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    return Fresh(token, jwks, jwks_file)


async def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{argv[0]} exited {process.returncode}:\n{text}"
    return text


def test_token_uses_the_default_algorithm(fresh: Fresh) -> None:
    """The token under test is signed with the configured default algorithm."""
    assert jwt.get_unverified_header(fresh.token)["alg"] == DEFAULT_ALGORITHM
    assert {key["alg"] for key in fresh.jwks["keys"]} == {DEFAULT_ALGORITHM}


def test_pyjwt_verifies(fresh: Fresh) -> None:
    """PyJWT verifies the token with the JWKS key its kid names."""
    key = jwt.PyJWKSet(fresh.jwks["keys"])[jwt.get_unverified_header(fresh.token)["kid"]]
    claims = jwt.decode(
        fresh.token, key, algorithms=[key.algorithm_name], issuer=ISSUER, audience=AUDIENCE
    )
    assert claims["sub"]


def test_joserfc_verifies(fresh: Fresh) -> None:
    """joserfc verifies the token with its default (recommended) algorithms."""
    token = jose_jwt.decode(fresh.token, KeySet.import_key_set(fresh.jwks))
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
    )
    registry.validate(token.claims)
    assert token.claims["sub"]


@pytest.fixture(scope="module")
async def node_results(fresh: Fresh) -> dict[str, str]:
    """What jose and jsonwebtoken (clients/node's dev dependencies) make of the token."""
    assert (NODE_CLIENT / "node_modules" / "jsonwebtoken").is_dir(), (
        "jose/jsonwebtoken missing: run `npm ci --prefix clients/node` (make install)"
    )
    output = await run(
        "node",
        "tools/verify-jwt.mjs",
        fresh.token,
        str(fresh.jwks_file),
        ISSUER,
        AUDIENCE,
        cwd=NODE_CLIENT,
    )
    results: dict[str, str] = json.loads(output.strip().splitlines()[-1])
    return results


def test_node_jose_verifies(node_results: dict[str, str]) -> None:
    """jose (Node) verifies the token against the JWKS with its defaults."""
    assert node_results["jose"] == "ok"


def test_node_jsonwebtoken_verifies(node_results: dict[str, str]) -> None:
    """jsonwebtoken (Node) verifies the token with the JWKS key, no algorithms given."""
    assert node_results["jsonwebtoken"] == "ok"


@pytest.fixture(scope="module")
async def golang_jwt_program() -> AsyncIterator[Path]:
    """The golang-jwt verifier, built in GOPATH mode on Debian's Go packages."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: the golang-jwt check did not run (CI installs Go)")
    with tempfile.TemporaryDirectory() as gopath:
        source = Path(gopath, "src", "authsvc.example", "tests", "interop", "golangjwt")
        shutil.copytree(GOLANG_JWT, source)
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:/usr/share/gocode"}
        program = Path(gopath, "golangjwt")
        await run("go", "build", "-o", str(program), ".", cwd=source, env=env)
        yield program


async def test_golang_jwt_verifies(fresh: Fresh, golang_jwt_program: Path) -> None:
    """golang-jwt's default parser verifies the token with the JWKS key its kid names."""
    output = await run(
        str(golang_jwt_program), fresh.token, str(fresh.jwks_file), ISSUER, AUDIENCE, cwd=ROOT
    )
    assert output.strip() == "ok"
