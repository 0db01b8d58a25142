"""TokenService over a real gRPC channel: introspection (RFC 7662 semantics), the JWKS, and
the RFC 8725 refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from authsvc.v1 import password_service_pb2, password_service_pb2_grpc, token_service_pb2_grpc
from authsvc.v1 import token_service_pb2 as pb
from cryptography.hazmat.primitives.asymmetric import ec

from service import app
from service.config import Settings
from tests.support import authorize, basic, new_user


def stub(channel: grpc.aio.Channel) -> token_service_pb2_grpc.TokenServiceStub:
    return token_service_pb2_grpc.TokenServiceStub(channel)


async def verify(channel: grpc.aio.Channel, token: str) -> pb.VerifyTokenResponse:
    return await stub(channel).VerifyToken(pb.VerifyTokenRequest(token=token))


async def signed(services, claims: dict, headers: dict | None = None) -> str:
    """A token signed with the service's own current key (to test claim checks alone)."""
    active = await services.keys.signing_key()
    return jwt.encode(
        claims,
        active.private,
        algorithm=active.key.algorithm,
        headers={"kid": active.key.kid, "typ": "at+jwt", **(headers or {})},
    )


async def good_claims(services) -> dict:
    user = await new_user(services, "pw")
    now = int(time.time())
    return {
        "iss": "authsvc",
        "aud": "authsvc",
        "sub": str(user.id),
        "username": user.username,
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
        "cv": user.credential_version,
    }


async def test_fresh_token_is_active_with_its_claims(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A token just issued is active and introspection returns its claims."""
    user = await new_user(services, "pw")
    token = (await authorize(channel, user.username, "pw", ttl=120)).access_token
    reply = await verify(channel, token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert reply.active
    assert (reply.sub, reply.username, reply.jti, reply.iss) == (
        str(user.id),
        user.username,
        claims["jti"],
        "authsvc",
    )
    assert (reply.iat, reply.exp) == (claims["iat"], claims["exp"])


async def test_inactive_answer_carries_nothing_else(channel: grpc.aio.Channel) -> None:
    """A token that is not valid is active=false with no other field set."""
    reply = await verify(channel, "not.a.token")
    assert not reply.active
    assert not any(reply.HasField(f) for f in ("sub", "username", "exp", "iat", "jti", "iss"))


async def test_huge_token_is_inactive(channel: grpc.aio.Channel) -> None:
    """An oversized input is inactive, not an error."""
    assert not (await verify(channel, "a" * 10_000)).active


async def test_missing_token_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    """No token at all is INVALID_ARGUMENT (RFC 7662 invalid_request), not active=false."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await verify(channel, "")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_alg_none_is_refused(channel: grpc.aio.Channel, services: app.Services) -> None:
    """An unsigned token (alg none) naming a real kid is inactive."""
    claims = await good_claims(services)
    kid = (await services.keys.signing_key()).key.kid
    token = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    assert not (await verify(channel, token)).active


async def test_foreign_key_with_known_kid_is_refused(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A token signed by another P-256 key (our algorithm) but naming our kid is inactive."""
    claims = await good_claims(services)
    kid = (await services.keys.signing_key()).key.kid
    token = jwt.encode(
        claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid}
    )
    assert not (await verify(channel, token)).active


async def test_tampered_signature_and_payload_are_refused(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Changing one byte of the payload or the signature makes a token inactive."""
    token = await signed(services, await good_claims(services))
    assert (await verify(channel, token)).active
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["username"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert not (await verify(channel, f"{head}.{forged}.{signature}")).active
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert not (await verify(channel, f"{head}.{payload}.{flipped}")).active


async def test_wrong_audience_or_type_is_refused(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A token for another audience, or not typed as an access token (typ at+jwt), is inactive."""
    claims = await good_claims(services)
    assert (await verify(channel, await signed(services, claims))).active
    for_others = await signed(services, {**claims, "aud": "another-service"})
    assert not (await verify(channel, for_others)).active
    untyped = await signed(services, claims, {"typ": "JWT"})
    assert not (await verify(channel, untyped)).active


async def test_crit_header_is_refused(channel: grpc.aio.Channel, services: app.Services) -> None:
    """A token with a crit header (an extension we do not implement) is inactive."""
    token = await signed(services, await good_claims(services), {"crit": ["exp"]})
    assert not (await verify(channel, token)).active


async def test_wrong_issuer_expired_and_future_tokens_are_refused(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Wrong iss, exp in the past and iat/nbf in the future beyond the leeway are inactive."""
    base = await good_claims(services)
    now = int(time.time())
    for change in (
        {"iss": "someone-else"},
        {"exp": now - 60},
        {"iat": now + 600, "exp": now + 900},
        {"nbf": now + 600},
    ):
        token = await signed(services, {**base, **change})
        assert not (await verify(channel, token)).active, change


async def test_missing_claims_are_refused(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A token without one of the required claims (here jti) is inactive."""
    claims = await good_claims(services)
    del claims["jti"]
    assert not (await verify(channel, await signed(services, claims))).active


async def test_password_change_revokes_earlier_tokens(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """After DeletePassword, tokens issued before are inactive; new ones work."""
    user = await new_user(services, "one-pw")
    before = (await authorize(channel, user.username, "one-pw")).access_token
    passwords = password_service_pb2_grpc.PasswordServiceStub(channel)
    await passwords.AddPassword(
        password_service_pb2.AddPasswordRequest(new_password="two-pw"),
        metadata=basic(user.username, "one-pw"),
    )
    assert (await verify(channel, before)).active  # adding a password revokes nothing
    await passwords.DeletePassword(
        password_service_pb2.DeletePasswordRequest(old_password="one-pw"),
        metadata=basic(user.username, "two-pw"),
    )
    assert not (await verify(channel, before)).active
    after = (await authorize(channel, user.username, "two-pw")).access_token
    assert (await verify(channel, after)).active


async def test_locked_or_deleted_user_tokens_are_inactive(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Locking a user makes their tokens inactive; deleting the user does too."""
    user = await new_user(services, "pw")
    token = (await authorize(channel, user.username, "pw")).access_token
    await services.users.set_locked(user.username, True)
    assert not (await verify(channel, token)).active
    await services.users.set_locked(user.username, False)
    assert (await verify(channel, token)).active
    await services.users.delete(user.username)
    assert not (await verify(channel, token)).active


async def test_jwks_verifies_tokens_offline_and_sets_cache_control(
    channel: grpc.aio.Channel, services: app.Services, settings: Settings
) -> None:
    """GetJwks returns public keys only, with Cache-Control from the rotation schedule, and a
    token verifies against it with no call to the service."""
    call = stub(channel).GetJwks(pb.GetJwksRequest())
    reply = await call
    assert ("cache-control", f"public, max-age={settings.jwks_max_age}") in tuple(
        await call.initial_metadata()
    )
    user = await new_user(services, "pw")
    token = (await authorize(channel, user.username, "pw")).access_token
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in reply.keys if k.kid == kid]
    assert (jwk.kty, jwk.crv, jwk.alg, jwk.use) == ("EC", "P-256", "ES256", "sig")
    assert not jwk.HasField("n") and not jwk.HasField("e")
    key = jwt.PyJWK({"kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "y": jwk.y, "kid": jwk.kid})
    assert jwt.decode(token, key, algorithms=["ES256"], issuer="authsvc", audience="authsvc")[
        "sub"
    ] == str(user.id)


async def test_old_token_verifies_after_rotation(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """After a forced rotation, new tokens use the new key and old tokens still verify."""
    user = await new_user(services, "pw")
    old = (await authorize(channel, user.username, "pw")).access_token
    new_key = await services.keys.rotate_now()
    fresh = (await authorize(channel, user.username, "pw")).access_token
    assert jwt.get_unverified_header(fresh)["kid"] == new_key.kid
    assert jwt.get_unverified_header(old)["kid"] != new_key.kid
    assert (await verify(channel, old)).active and (await verify(channel, fresh)).active
    kids = {k.kid for k in (await stub(channel).GetJwks(pb.GetJwksRequest())).keys}
    assert {jwt.get_unverified_header(old)["kid"], new_key.kid} <= kids


async def test_clock_skew_within_the_leeway_is_tolerated(
    channel: grpc.aio.Channel, services: app.Services, settings: Settings
) -> None:
    """A token expired less than AUTHSVC_TOKEN_LEEWAY seconds ago (or issued that much in the
    future) is still active; one past the leeway is not."""
    leeway = settings.token_leeway
    assert leeway == Settings().token_leeway == 10
    base = await good_claims(services)
    now = int(time.time())
    for change, active in (
        ({"exp": now - leeway // 2}, True),
        ({"iat": now + leeway // 2}, True),
        ({"exp": now - 3 * leeway}, False),
        ({"iat": now + 3 * leeway, "exp": now + 4 * leeway}, False),
    ):
        token = await signed(services, {**base, **change})
        assert (await verify(channel, token)).active is active, change


async def test_unknown_kid_is_refused(channel: grpc.aio.Channel, services: app.Services) -> None:
    """A token naming a kid the service never published is inactive (the key ring re-reads the
    table at most now and then, and finds nothing)."""
    active = await services.keys.signing_key()
    token = jwt.encode(
        await good_claims(services),
        active.private,
        algorithm=active.key.algorithm,
        headers={"kid": "no-such-key", "typ": "at+jwt"},
    )
    assert not (await verify(channel, token)).active


async def test_hs256_signed_with_the_public_key_is_refused(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Algorithm confusion: a token HMAC-signed with our public key's bytes (PEM or JWK text)
    under our kid is inactive; the algorithm comes from the key, never the header."""
    from cryptography.hazmat.primitives import serialization

    active = await services.keys.signing_key()
    public_pem = (
        (
            serialization.load_pem_private_key(active.private, password=None)
            if isinstance(active.private, bytes)
            else active.private
        )
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = await good_claims(services)
    for secret in (public_pem, json.dumps(active.key.public_jwk).encode()):
        header = base64.urlsafe_b64encode(
            json.dumps({"alg": "HS256", "kid": active.key.kid, "typ": "at+jwt"}).encode()
        ).rstrip(b"=")
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        signature = base64.urlsafe_b64encode(
            hmac.new(secret, header + b"." + payload, hashlib.sha256).digest()
        ).rstrip(b"=")
        token = b".".join((header, payload, signature)).decode()
        assert not (await verify(channel, token)).active


async def test_expired_users_tokens_are_inactive(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Once a user's account has expired, its tokens no longer verify; lifting the expiry
    brings them back."""
    user = await new_user(services, "pw")
    token = (await authorize(channel, user.username, "pw")).access_token
    assert (await verify(channel, token)).active
    await services.users.set_expiry(user.username, datetime.now(UTC) - timedelta(seconds=1))
    assert not (await verify(channel, token)).active
    await services.users.set_expiry(user.username, None)
    assert (await verify(channel, token)).active
