"""Who is calling: a bearer JWT access token or an API key, turned into a Principal."""

from __future__ import annotations

import datetime as dt

from kit.errors import Unauthenticated
from kit.roles import Role
from kit.security import API_KEY_PREFIX, Principal, decode_access_token, hash_token
from kit.settings import Settings
from models.apikeys import ApiKey

_LAST_USED_GRANULARITY = dt.timedelta(seconds=60)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'.")
    return token.strip()


async def authenticate(settings: Settings, token: str | None) -> Principal | None:
    """None for an anonymous caller; UNAUTHENTICATED for a token that is present but bad."""
    if token is None:
        return None
    if token.startswith(API_KEY_PREFIX):
        return await _authenticate_api_key(token)
    return decode_access_token(settings, token)


async def _authenticate_api_key(secret: str) -> Principal:
    key = await ApiKey.filter(key_hash=hash_token(secret), revoked_at=None).first()
    if key is None:
        raise Unauthenticated("Invalid API key.")
    now = dt.datetime.now(dt.UTC)
    # Writing on every call would turn reads into writes; a minute's precision is enough.
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_GRANULARITY:
        await ApiKey.filter(id=key.id).update(last_used_at=now)
    return Principal(
        user_id=key.created_by_id, tenant_id=key.tenant_id, role=Role(key.role), api_key_id=key.id
    )
