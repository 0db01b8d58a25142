"""RS256 and ES256, for verifiers that lack EdDSA: selectable, and verifiable from the JWKS."""

from __future__ import annotations

import jwt
import pytest
from authsvc.v1 import token_service_pb2 as pb
from authsvc.v1 import token_service_pb2_grpc

from tests.support import authorize, new_user, serving


@pytest.mark.parametrize(
    ("algorithm", "kty"), [("RS256", "RSA"), ("ES256", "EC"), ("EdDSA", "OKP")]
)
async def test_configured_algorithm_signs_and_verifies(db, settings, algorithm, kty) -> None:
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
        public = jwt.PyJWK({f: getattr(jwk, f) for f in fields if f == "kty" or jwk.HasField(f)})
        claims = jwt.decode(
            token, public, algorithms=[algorithm], issuer="authsvc", audience="authsvc"
        )
        assert claims["sub"] == str(user.id)
        assert (await tokens.VerifyToken(pb.VerifyTokenRequest(token=token))).active


async def test_switching_algorithm_keeps_old_tokens_valid(db, settings) -> None:
    """After a switch from EdDSA to RS256, an EdDSA token issued before still verifies."""
    async with serving(db, settings, jwt_algorithm="EdDSA") as (channel, services):
        user = await new_user(services, "pw")
        old = (await authorize(channel, user.username, "pw")).access_token
    async with serving(db, settings, jwt_algorithm="RS256") as (channel, _):
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        assert (await tokens.VerifyToken(pb.VerifyTokenRequest(token=old))).active
        new = (await authorize(channel, user.username, "pw")).access_token
        assert jwt.get_unverified_header(new)["alg"] == "RS256"
