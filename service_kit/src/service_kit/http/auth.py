"""Optional API keys: ``Authorization: Bearer <key>`` on every route but the public ones.

With no keys configured nothing is checked. With keys, a request to any path outside
``PUBLIC_PATHS`` needs one of them, or gets 401 in the shared envelope with
``WWW-Authenticate: Bearer``. Several keys may be valid at once (rotation). A token is compared
with every key, in constant time, through fixed-length digests, so neither a key's length nor
which key matched shows in the timing.

The check runs twice, from the same code: a middleware refuses before the body is read (an
unauthenticated client costs no JSON or image parsing, and gets 401 even when its body is
malformed), and a ``Security`` dependency on the API routers puts the bearer scheme in the
OpenAPI document. Probes stay open for Docker and the orchestrator, and so do the docs: they
describe the API (how to authenticate included), not its data.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from fastapi import Security
from fastapi.params import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from service_kit.errors import Unauthorized, error_response

PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="api_key",
    description="One of the service's API keys (EDITOR_API_KEYS / REWARD_API_KEYS).",
)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The accepted keys, kept as digests."""

    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        values = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys]
        self._digests = [_digest(v) for v in values if v]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is one of the keys; compares against every key, whatever matches."""
        given = _digest(token)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(given, digest)
        return matched

    async def check(self, connection: HTTPConnection) -> None:
        """Raise Unauthorized unless the request carries one of the keys as a bearer token."""
        if self.enabled:
            self.check_credentials(await bearer(connection))

    def check_credentials(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        if credentials is None:
            raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
        if not self.accepts(credentials.credentials):
            raise Unauthorized("the API key is not valid")


class ApiKeyMiddleware:
    """Refuses requests without a valid key before the app reads their body."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or not self.keys.enabled:
            await self.app(scope, receive, send)
            return
        try:
            await self.keys.check(HTTPConnection(scope))
        except Unauthorized as exc:
            refusal = error_response(
                exc.status_code, exc.error_type, exc.message, headers=exc.headers()
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def api_key_dependencies(keys: ApiKeys) -> list[Depends]:
    """Dependencies for the API routers: the bearer scheme in OpenAPI, and the same check."""
    if not keys.enabled:
        return []

    async def require_api_key(
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> None:
        keys.check_credentials(credentials)

    return [Security(require_api_key)]
