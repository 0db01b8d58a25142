"""gRPC servicers: credentials from metadata -> one domain call -> a `*_to_pb` mapper.

No business rule lives here; the gateway reaches the same methods, so REST can never bypass a check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import grpc
from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    password_service_pb2,
    password_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

from service.client_address import IPNetwork
from service.domain.authenticator import Authenticator
from service.domain.authorization import AuthorizationService
from service.domain.models import IssuedToken, Principal, SigningKey, VerifiedToken
from service.domain.password_lists import PasswordManager
from service.domain.signing_keys import KeyRing
from service.domain.tokens import TokenVerifier
from service.errors import invalid_argument
from service.rpc.credentials import (
    basic_credentials,
    credentials_required,
    require_basic_credentials,
)
from service.rpc.sources import call_source
from service.rpc.status import rpc_method

Context: TypeAlias = grpc.aio.ServicerContext


def authorize_to_pb(issued: IssuedToken) -> auth_service_pb2.AuthorizeResponse:
    return auth_service_pb2.AuthorizeResponse(access_token=issued.token)


def api_token_to_pb(issued: IssuedToken) -> auth_service_pb2.IssueApiTokenResponse:
    return auth_service_pb2.IssueApiTokenResponse(
        api_token=issued.token, expires=int(issued.expires_at.timestamp() * 1000), status=200
    )


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        authorization: AuthorizationService,
        api_token_ttl: int,
        trusted_proxies: Sequence[IPNetwork] = (),
    ) -> None:
        self._authorization = authorization
        self._api_token_ttl = api_token_ttl
        self._trusted_proxies = trusted_proxies

    @rpc_method
    async def Authorize(
        self, request: auth_service_pb2.AuthorizeRequest, context: Context
    ) -> auth_service_pb2.AuthorizeResponse:
        header = basic_credentials(context.invocation_metadata() or ())
        in_body = bool(request.username or request.password)
        if header is not None and in_body:
            raise invalid_argument(
                "send credentials in the authorization header or the body, not both"
            )
        if header is None and not in_body:
            raise credentials_required()
        username, password = header or (request.username, request.password)
        ttl = request.ttl if request.HasField("ttl") else None
        source = call_source(context, self._trusted_proxies)
        return authorize_to_pb(await self._authorization.authorize(username, password, source, ttl))

    @rpc_method
    async def IssueApiToken(
        self, request: auth_service_pb2.IssueApiTokenRequest, context: Context
    ) -> auth_service_pb2.IssueApiTokenResponse:
        if not request.user_name or not request.pwd:
            raise invalid_argument("userName and pwd are required")
        issued = await self._authorization.authorize(
            request.user_name,
            request.pwd,
            call_source(context, self._trusted_proxies),
            self._api_token_ttl,
        )
        return api_token_to_pb(issued)


class PasswordServicer(password_service_pb2_grpc.PasswordServiceServicer):
    def __init__(
        self,
        authenticator: Authenticator,
        passwords: PasswordManager,
        trusted_proxies: Sequence[IPNetwork] = (),
    ) -> None:
        self._authenticator = authenticator
        self._passwords = passwords
        self._trusted_proxies = trusted_proxies

    async def _caller(self, context: Context) -> Principal:
        username, password = require_basic_credentials(context.invocation_metadata() or ())
        source = call_source(context, self._trusted_proxies)
        return await self._authenticator.authenticate(username, password, source)

    @rpc_method
    async def ReplacePasswords(
        self, request: password_service_pb2.ReplacePasswordsRequest, context: Context
    ) -> password_service_pb2.ReplacePasswordsResponse:
        await self._passwords.replace(await self._caller(context), request.new_password)
        return password_service_pb2.ReplacePasswordsResponse()

    @rpc_method
    async def AddPassword(
        self, request: password_service_pb2.AddPasswordRequest, context: Context
    ) -> password_service_pb2.AddPasswordResponse:
        await self._passwords.add(await self._caller(context), request.new_password)
        return password_service_pb2.AddPasswordResponse()

    @rpc_method
    async def DeletePassword(
        self, request: password_service_pb2.DeletePasswordRequest, context: Context
    ) -> password_service_pb2.DeletePasswordResponse:
        await self._passwords.delete(await self._caller(context), request.old_password)
        return password_service_pb2.DeletePasswordResponse()


def verified_to_pb(verified: VerifiedToken | None) -> token_service_pb2.VerifyTokenResponse:
    if verified is None:
        return token_service_pb2.VerifyTokenResponse(active=False)
    return token_service_pb2.VerifyTokenResponse(
        active=True,
        sub=verified.subject,
        username=verified.username,
        exp=verified.expires_at,
        iat=verified.issued_at,
        jti=verified.jti,
        iss=verified.issuer,
        groups=verified.groups,
        scope=" ".join(verified.scopes),
    )


def jwks_to_pb(keys: list[SigningKey]) -> token_service_pb2.GetJwksResponse:
    fields = {f.name for f in token_service_pb2.Jwk.DESCRIPTOR.fields}
    return token_service_pb2.GetJwksResponse(
        keys=[
            token_service_pb2.Jwk(**{k: v for k, v in key.public_jwk.items() if k in fields})
            for key in keys
        ]
    )


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    def __init__(self, verifier: TokenVerifier, keys: KeyRing, jwks_max_age: int) -> None:
        self._verifier = verifier
        self._keys = keys
        self._cache_control = f"public, max-age={jwks_max_age}"

    @rpc_method
    async def VerifyToken(
        self, request: token_service_pb2.VerifyTokenRequest, context: Context
    ) -> token_service_pb2.VerifyTokenResponse:
        if not request.token:
            raise invalid_argument("token is required")  # RFC 7662: invalid_request
        return verified_to_pb(await self._verifier.verify(request.token, request.required_scope))

    @rpc_method
    async def GetJwks(
        self, request: token_service_pb2.GetJwksRequest, context: Context
    ) -> token_service_pb2.GetJwksResponse:
        # A scheduled key is published `jwks_max_age` before it signs, so a key set cached
        # for that long always holds the key of any token it meets.
        await context.send_initial_metadata((("cache-control", self._cache_control),))
        return jwks_to_pb(await self._keys.published())
