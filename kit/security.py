"""Passwords (argon2id), JWT access tokens with key ids, and opaque tokens stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from kit.errors import BadUserInput, Unauthenticated
from kit.roles import Role
from kit.settings import Settings

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile
_DUMMY_HASH = _hasher.hash("switchboard-timing-equaliser")

ALGORITHM = "HS256"
API_KEY_PREFIX = "sbk_"
REFRESH_PREFIX = "sbr_"

_COMMON_PASSWORDS = frozenset(
    """password password1 password123 123456789 1234567890 qwertyuiop iloveyou
    letmein123 welcome123 admin12345 changeme123 passw0rd123 qwerty12345 abc1234567
    11111111111 football123 monkey12345 dragon12345 sunshine123 princess123""".split()
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user in one tenant with one role, or a tenant's API key."""

    user_id: int | None
    tenant_id: int
    role: Role
    api_key_id: int | None = None
    session_family: str | None = None
    # The membership an access token was issued for (a member removed and invited again
    # has a new one, so older tokens stay dead), and when the credential lapses (unix
    # seconds; None: an API key, valid until revoked). See resolvers/authority.py.
    membership_id: int | None = None
    expires_at: float | None = None

    @property
    def key(self) -> str:
        """Identity for per-principal budgets (rate limits)."""
        if self.api_key_id is not None:
            return f"key:{self.api_key_id}"
        return f"user:{self.user_id}:{self.tenant_id}"


# Passwords -----------------------------------------------------------------


def check_password_strength(password: str, *, email: str = "") -> None:
    problems = []
    if len(password) < 10:
        problems.append("must be at least 10 characters")
    if len(password) > 256:
        problems.append("must be at most 256 characters")
    if password.lower() in _COMMON_PASSWORDS or len(set(password)) < 4:
        problems.append("is too common or too simple")
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in password.lower():
        problems.append("must not contain your email address")
    if problems:
        raise BadUserInput("Password is too weak.", details={"password": "; ".join(problems)})


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-ish time: an unknown account still pays for one argon2 verify."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


# Opaque tokens ---------------------------------------------------------------


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """Tokens are random and long, so a plain SHA-256 is the right digest (no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# JWT access tokens -----------------------------------------------------------


def issue_access_token(settings: Settings, principal: Principal) -> tuple[str, int]:
    """Return (token, expires_at unix seconds). Signed with the first configured key."""
    kid, secret = settings.signing_keys[0]
    now = int(time.time())
    exp = now + settings.access_token_ttl_seconds
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "sub": str(principal.user_id),
        "tid": principal.tenant_id,
        "role": principal.role.value,
        "sid": principal.session_family,
        "mid": principal.membership_id,
        "iat": now,
        "exp": exp,
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    token = jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": kid})
    return token, exp


def decode_access_token(settings: Settings, token: str) -> Principal:
    """Verify signature (by `kid`), expiry and issuer; anything off is UNAUTHENTICATED."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthenticated("Invalid access token.") from None
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str):
        raise Unauthenticated("Invalid access token.")
    secret = dict(settings.signing_keys).get(kid)
    if secret is None:
        raise Unauthenticated("Invalid access token.")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "tid", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("Access token expired.", reason="TOKEN_EXPIRED") from None
    except jwt.PyJWTError:
        raise Unauthenticated("Invalid access token.") from None
    if claims.get("typ") != "access":
        raise Unauthenticated("Invalid access token.")
    try:
        return Principal(
            user_id=int(claims["sub"]),
            tenant_id=int(claims["tid"]),
            role=Role(claims["role"]),
            session_family=claims.get("sid"),
            membership_id=int(claims["mid"]) if claims.get("mid") is not None else None,
            expires_at=float(claims["exp"]),
        )
    except (ValueError, TypeError):
        raise Unauthenticated("Invalid access token.") from None
