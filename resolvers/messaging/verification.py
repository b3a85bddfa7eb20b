"""Verification codes: a signed-in member proves they hold a phone number.

`sendVerificationCode(phone, channel)` sends a 6-digit code by SMS or WhatsApp (on
WhatsApp as the account's approved verification template, `verificationContentSid` /
TWILIO_VERIFICATION_CONTENT_SID, with the code as its variable {{1}}, since WhatsApp takes
only templates from a business the person has not written to in 24 hours; as text when
the account names none); `checkVerificationCode(phone, code)` checks it and records the
number on the user (`phone`, `phoneVerifiedAt`).

- Codes are stored as an HMAC-SHA256 keyed with the first vault key (never as they are;
  a leaked table cannot be tried offline without the key), compared in constant time.
- A code lives VERIFICATION_CODE_TTL_SECONDS (10 minutes), takes at most
  VERIFICATION_MAX_ATTEMPTS checks (5) — the attempt is counted in the store before the
  comparison, so parallel guesses cannot pass the limit — and is used once: the check that
  marks it verified is a conditional update, so of two checks of the same code racing,
  only one wins. A new code supersedes the previous ones.
- A resend within VERIFICATION_RESEND_COOLDOWN_SECONDS is RATE_LIMITED with retryAfter;
  sends are limited per number (VERIFICATION_SENDS_PER_NUMBER, across organizations) and
  per client address (VERIFICATION_SENDS_PER_ADDRESS), checks per client address
  (VERIFICATION_CHECKS_PER_ADDRESS), all exact windows.
- A wrong, expired, used or exhausted code all answer the same INVALID_VERIFICATION_CODE,
  so an answer says nothing about which.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, GatewayError, RateLimited
from kit.phones import e164
from models.accounts import User
from models.messaging import Channel, Message, VerificationCode
from resolvers import viewer_cache
from resolvers.context import Context
from resolvers.events import emit, global_id
from resolvers.messaging.optout import opted_out, refuse
from resolvers.messaging.outbox import SEALED_KIND, queue, seal
from resolvers.operations import SIGNED_IN, operation

CODE_DIGITS = 6
MAX_CODE_CHARS = 16


class InvalidCode(GatewayError):
    """The code is wrong, expired, used, or out of attempts (never said which)."""

    code = "INVALID_VERIFICATION_CODE"
    http_status = 400


def code_hash(ctx: Context, phone: str, code: str) -> str:
    key = ctx.settings.vault_keys[0].encode()
    return hmac.new(key, f"verification:{phone}:{code}".encode(), "sha256").hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _user_of(ctx: Context) -> tuple[int, int]:
    principal = ctx.require_principal()
    if principal.user_id is None or principal.api_key_id is not None:
        raise BadUserInput(
            "Only a signed-in person verifies a phone.",
            details={"phone": "API keys have no phone of their own"},
        )
    return principal.tenant_id, principal.user_id


async def _limit(ctx: Context, spec: str, *identity: str) -> None:
    if ctx.settings.rate_limit_enabled:
        await ctx.services.limiter.enforce(
            spec, *identity, message="Too many verification attempts.", exact=True
        )


@dataclass
class SentCode:
    phone: str
    expires_at: dt.datetime
    message: Message


@operation(SIGNED_IN)
async def send_code(ctx: Context, phone: str, channel: Channel) -> SentCode:
    tenant_id, user_id = _user_of(ctx)
    number = e164(phone, "phone")
    if channel not in (Channel.SMS, Channel.WHATSAPP):
        raise BadUserInput("Codes go by SMS or WhatsApp.", details={"channel": "SMS or WHATSAPP"})
    if await opted_out(tenant_id, [number]):
        raise refuse(number, "phone")
    settings = ctx.settings
    cooldown = dt.timedelta(seconds=settings.verification_resend_cooldown_seconds)
    last = (
        await VerificationCode.filter(user_id=user_id, phone=number).order_by("-created_at").first()
    )
    if last is not None and now() - last.created_at < cooldown:
        wait = cooldown - (now() - last.created_at)
        raise RateLimited(
            int(wait.total_seconds()) + 1, "A code was sent a moment ago; wait before resending."
        )
    await _limit(ctx, settings.verification_sends_per_number, "verify-send-number", number)
    await _limit(ctx, settings.verification_sends_per_address, "verify-send-ip", ctx.client_ip)
    code = new_code()
    expires = now() + dt.timedelta(seconds=settings.verification_code_ttl_seconds)
    minutes = settings.verification_code_ttl_seconds // 60
    body = (
        f"{code} is your verification code. It expires in {minutes} minutes. "
        "Do not share it with anyone."
    )
    async with in_transaction() as conn:
        await (
            VerificationCode.filter(
                user_id=user_id, phone=number, verified_at=None, superseded=False
            )
            .using_db(conn)
            .update(superseded=True)
        )
        message = await queue(
            tenant_id=tenant_id,
            channel=channel,
            kind=SEALED_KIND,
            recipient=number,
            body=seal(settings, body, code),
            author_id=user_id,
            connection=conn,
        )
        await VerificationCode.create(
            tenant_id=tenant_id,
            user_id=user_id,
            phone=number,
            channel=channel.value,
            code_hash=code_hash(ctx, number, code),
            expires_at=expires,
            message_id=message.id,
            using_db=conn,
        )
    return SentCode(number, expires, message)


@operation(SIGNED_IN)
async def check_code(ctx: Context, phone: str, code: str) -> User:
    """The user with the phone recorded; INVALID_VERIFICATION_CODE otherwise."""
    tenant_id, user_id = _user_of(ctx)
    number = e164(phone, "phone")
    await _limit(
        ctx, ctx.settings.verification_checks_per_address, "verify-check-ip", ctx.client_ip
    )
    if not isinstance(code, str) or len(code) > MAX_CODE_CHARS:
        raise InvalidCode("The code is not valid.")
    given = "".join(code.split())
    current = (
        await VerificationCode.filter(
            user_id=user_id, phone=number, verified_at=None, superseded=False
        )
        .order_by("-created_at")
        .first()
    )
    if current is None or current.expires_at <= now():
        raise InvalidCode("The code is not valid.")
    limit = ctx.settings.verification_max_attempts
    # Count the attempt before comparing, conditionally: parallel guesses cannot pass it.
    counted = await VerificationCode.filter(
        id=current.id, attempts__lt=limit, verified_at=None
    ).update(attempts=F("attempts") + 1)
    if not counted:
        raise InvalidCode("The code is not valid.")
    expected = current.code_hash
    actual = code_hash(ctx, number, given)
    if not hmac.compare_digest(expected.encode(), actual.encode()):
        raise InvalidCode("The code is not valid.")
    at = now()
    async with in_transaction() as conn:
        won = (
            await VerificationCode.filter(id=current.id, verified_at=None, superseded=False)
            .using_db(conn)
            .update(verified_at=at)
        )
        if not won:  # another check of the same code got there first
            raise InvalidCode("The code is not valid.")
        await User.filter(id=user_id).using_db(conn).update(phone=number, phone_verified_at=at)
        await emit(
            tenant_id,
            "user.phone_verified",
            {"userId": global_id("User", user_id)},
            connection=conn,
        )
    viewer_cache.forget_user(ctx.services, user_id)  # `me` shows it at once
    user = await User.get(id=user_id)
    return user
