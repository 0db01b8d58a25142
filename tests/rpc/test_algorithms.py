"""Every selectable algorithm (ES256, the default; RS256; Ed25519 under RFC 9864's identifier and
the older EdDSA) signs tokens that verify from the JWKS; switching keeps old tokens valid."""

from __future__ import annotations

import jwt
import pytest
from authsvc.v1 import token_service_pb2 as pb
from authsvc.v1 import token_service_pb2_grpc

from service.config import Settings
from service.store.db import Database
from tests.support import authorize, new_user, serving


@pytest.mark.parametrize(
    ("algorithm", "kty"), [("RS256", "RSA"), ("ES256", "EC"), ("Ed25519", "OKP"), ("EdDSA", "OKP")]
)
async def test_configured_algorithm_signs_and_verifies(
    db: Database, settings: Settings, algorithm, kty
) -> None:
    """With AUTHSVC_JWT_ALGORITHM set, tokens carry that alg, verify with the published JWK, and
    VerifyToken accepts them."""
    async with serving(db, settings, jwt_algorithm=algorithm) as (channel, services):
        user = await new_user(services, "pw")
        token = (await authorize(channel, user.username, "pw")).access_token
        header = jwt.get_unverified_header(token)
        assert header["alg"] == algorithm
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        jwks = await tokens.GetJwks(pb.GetJwksRequest())
        (jwk,) = [k for k in jwks.keys if k.kid == header["kid"]]
        assert (jwk.kty, jwk.alg) == (kty, algorithm)
        fields = ("kty", "crv", "x", "y", "n", "e")
        # The bare key: PyJWT's PyJWK names an Ed25519 key's algorithm "EdDSA" only.
        public = jwt.PyJWK(
            {f: getattr(jwk, f) for f in fields if f == "kty" or jwk.HasField(f)}
        ).key
        claims = jwt.decode(
            token, public, algorithms=[algorithm], issuer="authsvc", audience="authsvc"
        )
        assert claims["sub"] == str(user.id)
        assert (await tokens.VerifyToken(pb.VerifyTokenRequest(token=token))).active


@pytest.mark.parametrize(("before", "after"), [("EdDSA", "ES256"), ("ES256", "RS256")])
async def test_switching_algorithm_keeps_old_tokens_valid(
    db: Database, settings: Settings, before, after
) -> None:
    """After a switch of algorithm (EdDSA to ES256: a deployment that kept the old default and
    upgrades), a token issued before still verifies and new ones use the new algorithm."""
    async with serving(db, settings, jwt_algorithm=before) as (channel, services):
        user = await new_user(services, "pw")
        old = (await authorize(channel, user.username, "pw")).access_token
        assert jwt.get_unverified_header(old)["alg"] == before
    async with serving(db, settings, jwt_algorithm=after) as (channel, _):
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        assert (await tokens.VerifyToken(pb.VerifyTokenRequest(token=old))).active
        new = (await authorize(channel, user.username, "pw")).access_token
        assert jwt.get_unverified_header(new)["alg"] == after
