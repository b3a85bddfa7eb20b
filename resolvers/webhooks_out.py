"""Outgoing webhooks: tenants' endpoints, deliveries from domain events, signed attempts.

- Endpoints: a URL (checked by the SSRF guard, https in production), the event types it
  wants (globs; empty = all) and a Standard Webhooks secret `whsec_…` shown once and
  stored encrypted with the vault (it must be recoverable to sign). After
  `rotateWebhookSecret` the old secret keeps signing too (both signatures,
  space-separated) for 24 h.
- Deliveries: a listener on every domain event creates one `WebhookDelivery` per enabled
  endpoint subscribed to the event's type, in the outbox relay's transaction (so together
  with the event being marked published), and unique per (event, endpoint) besides; its
  job is queued in the same transaction. The body and `webhook-id` are fixed at creation,
  so every attempt — after a crash too — carries the same id.
- Attempts (`webhooks.deliver` job): each is logged before the request (so one cut short
  by a dying worker shows as interrupted) and finished with status, duration, the first
  1 KiB of the response (enough to debug a receiver, too little to make the log a way
  of reading someone's service) and the error. 2xx within 15 s (connect 2 s) is success;
  redirects are not followed; the address is checked at creation (with a lookup) and
  again at every attempt, and pinned, by `kit/ssrf.py`: a refused address is a
  failed attempt with no response at all.
- Retries: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, each ±20 %;
  at least 60 s after a 429 or a timeout; a later `Retry-After` wins (capped at 24 h).
  410 disables the endpoint at once. An endpoint with failures and no success for
  `WEBHOOK_DISABLE_AFTER_SECONDS` (5 days) is disabled. Disabling emits the domain event
  `webhook_endpoint.disabled` so the owner is told (in the activity stream and to any
  other endpoint subscribed to it).
- `resendWebhookDelivery` starts a new round of attempts for any delivery, same body and id.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import fnmatch
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import require
from kit.settings import Settings, get_settings
from kit.signing import generate_secret, new_message_id, signed_headers
from kit.ssrf import Policy, UnsafeDestination, check_destination, check_url, guarded_session
from kit.vault import vault_for
from models.tenancy import get_many_scoped, get_scoped, scoped
from models.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from resolvers.context import Context
from resolvers.events import Event, emit, listener
from resolvers.jobs import JobContext, RetryLater, enqueue, job_handler, now
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

log = logging.getLogger("switchboard.webhooks.out")

DELIVER_JOB = "webhooks.deliver"
# Seconds to wait before attempt n+1 (n = attempts made): immediately, 5 s, 5 min, …
RETRY_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2
MIN_DELAY_AFTER_THROTTLE = 60.0  # after a 429 or a timeout
MAX_RETRY_AFTER = 24 * 3600.0
SECRET_GRACE = dt.timedelta(hours=24)
RESPONSE_BODY_LIMIT = 1024
CONNECT_TIMEOUT = 2.0
TOTAL_TIMEOUT = 15.0
USER_AGENT = "Switchboard-Webhooks/1.0"
TEST_EVENT_TYPE = "webhook.test"
DISABLED_EVENT_TYPE = "webhook_endpoint.disabled"
EVENT_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|\*))*)$")
MAX_EVENT_TYPES = 100

_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """The settings delivery jobs of this process use (installed with the app's routes)."""
    global _settings
    _settings = settings


def current_settings() -> Settings:
    return _settings or get_settings()


def policy_for(settings: Settings) -> Policy:
    return settings.outbound_policy()


# Secrets ---------------------------------------------------------------------------------


def live_secrets(settings: Settings, endpoint: WebhookEndpoint, at: dt.datetime) -> list[str]:
    """The current secret, and the previous one while its 24 h of grace last."""
    vault = vault_for(settings.vault_keys)
    found = [vault.decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > at
    ):
        found.append(vault.decrypt(endpoint.previous_secret_encrypted))
    return found


# Validation ------------------------------------------------------------------------------


async def _clean_url(settings: Settings, url: str) -> str:
    url = (url or "").strip()
    require(0 < len(url) <= 2000, "url", "must be 1 to 2000 characters")
    # The URL as it will be dialled, its name looked up: UnsafeDestination is
    # BAD_USER_INPUT on `url`. Every attempt checks again (DNS and settings change).
    await check_destination(url, policy_for(settings))
    return url


def _clean_event_types(event_types: Sequence[str]) -> list[str]:
    cleaned: list[str] = []
    for raw in event_types:
        value = raw.strip()
        require(
            bool(EVENT_PATTERN.match(value)),
            "eventTypes",
            f"{value!r} is not an event type or pattern like 'contact.created' or 'contact.*'",
        )
        if value not in cleaned:
            cleaned.append(value)
    require(len(cleaned) <= MAX_EVENT_TYPES, "eventTypes", f"at most {MAX_EVENT_TYPES} types")
    return cleaned


def _clean_description(description: str | None) -> str:
    value = (description or "").strip()
    require(len(value) <= 300, "description", "must be at most 300 characters")
    return value


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    patterns = list(endpoint.event_types or [])
    return not patterns or any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


# Endpoints -------------------------------------------------------------------------------


@dataclass
class EndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str  # shown once


@operation("webhooks:manage")
async def create_endpoint(
    ctx: Context, *, url: str, event_types: Sequence[str], description: str | None
) -> EndpointWithSecret:
    principal = ctx.require_principal()
    clean_url = await _clean_url(ctx.settings, url)
    types = _clean_event_types(event_types)
    text = _clean_description(description)
    secret = generate_secret()
    endpoint = await WebhookEndpoint.create(
        tenant_id=principal.tenant_id,
        url=clean_url,
        event_types=types,
        description=text,
        secret_encrypted=vault_for(ctx.settings.vault_keys).encrypt(secret),
    )
    return EndpointWithSecret(endpoint, secret)


@operation("webhooks:manage")
async def update_endpoint(
    ctx: Context,
    *,
    endpoint_id: int,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    principal = ctx.require_principal()
    endpoint = await get_scoped(WebhookEndpoint, principal.tenant_id, endpoint_id)
    if url is not None:
        endpoint.url = await _clean_url(ctx.settings, url)
    if event_types is not None:
        endpoint.event_types = _clean_event_types(event_types)
    if description is not None:
        endpoint.description = _clean_description(description)
    await endpoint.save()
    return endpoint


@operation("webhooks:manage")
async def set_endpoint_enabled(ctx: Context, *, endpoint_id: int, enabled: bool) -> WebhookEndpoint:
    """Enable (clearing the failure clock) or disable an endpoint by hand."""
    principal = ctx.require_principal()
    endpoint = await get_scoped(WebhookEndpoint, principal.tenant_id, endpoint_id)
    if enabled:
        endpoint.enabled = True
        endpoint.disabled_at = None
        endpoint.disabled_reason = None
        endpoint.failing_since = None
    elif endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_at = now()
        endpoint.disabled_reason = "disabled by a user"
    await endpoint.save()
    return endpoint


@operation("webhooks:manage")
async def delete_endpoint(ctx: Context, *, endpoint_id: int) -> int:
    principal = ctx.require_principal()
    endpoint = await get_scoped(WebhookEndpoint, principal.tenant_id, endpoint_id)
    await endpoint.delete()
    return endpoint_id


@operation("webhooks:manage")
async def rotate_secret(ctx: Context, *, endpoint_id: int) -> EndpointWithSecret:
    """A new secret signs from now on; the old one also signs for 24 h (both are sent)."""
    principal = ctx.require_principal()
    secret = generate_secret()
    vault = vault_for(ctx.settings.vault_keys)
    async with in_transaction() as conn:
        endpoint = await get_scoped(
            WebhookEndpoint, principal.tenant_id, endpoint_id, for_update=True
        )
        moment = now()
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = moment + SECRET_GRACE
        endpoint.secret_encrypted = vault.encrypt(secret)
        endpoint.secret_rotated_at = moment
        await endpoint.save(using_db=conn)
    return EndpointWithSecret(endpoint, secret)


@operation("webhooks:manage")
async def list_endpoints(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[WebhookEndpoint]:
    principal = ctx.require_principal()
    return await page_of(
        ctx, scoped(WebhookEndpoint, principal.tenant_id), first=first, after=after
    )


async def load_endpoints(ctx: Context, ids: list[int]) -> dict[int, WebhookEndpoint]:
    principal = ctx.require("webhooks:manage")
    return await get_many_scoped(WebhookEndpoint, principal.tenant_id, ids)


# Deliveries ------------------------------------------------------------------------------


def message_body(event_type: str, occurred_at: dt.datetime, data: dict[str, Any]) -> str:
    """The Standard Webhooks payload shape: type, timestamp, data."""
    return json.dumps(
        {"type": event_type, "timestamp": occurred_at.isoformat(), "data": data},
        separators=(",", ":"),
        default=str,
    )


async def _create_delivery(
    endpoint: WebhookEndpoint,
    *,
    event_id: int | None,
    event_type: str,
    body: str,
    connection: BaseDBAsyncClient,
    manual: bool = False,
) -> WebhookDelivery:
    delivery = await WebhookDelivery.create(
        using_db=connection,
        tenant_id=endpoint.tenant_id,
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type=event_type,
        message_id=new_message_id(),
        body=body,
        next_attempt_at=now(),
    )
    await enqueue(
        DELIVER_JOB,
        {"delivery_id": delivery.id, "manual": manual},
        tenant_id=endpoint.tenant_id,
        connection=connection,
    )
    return delivery


@listener("*")
async def deliver_event(event: Event, connection: BaseDBAsyncClient) -> None:
    """One delivery per subscribed, enabled endpoint, in the relay's transaction."""
    endpoints = await WebhookEndpoint.filter(tenant_id=event.tenant_id, enabled=True).using_db(
        connection
    )
    wanted = [e for e in endpoints if subscribed(e, event.type)]
    if not wanted:
        return
    already = set(
        await WebhookDelivery.filter(event_id=event.id, endpoint_id__in=[e.id for e in wanted])
        .using_db(connection)
        .values_list("endpoint_id", flat=True)
    )
    body = message_body(event.type, event.occurred_at, event.data)
    for endpoint in wanted:
        if endpoint.id not in already:
            await _create_delivery(
                endpoint, event_id=event.id, event_type=event.type, body=body, connection=connection
            )


@operation("webhooks:manage")
async def send_test(ctx: Context, *, endpoint_id: int) -> WebhookDelivery:
    """A `webhook.test` message to one endpoint, whatever types it subscribes to."""
    principal = ctx.require_principal()
    endpoint = await get_scoped(WebhookEndpoint, principal.tenant_id, endpoint_id)
    require(endpoint.enabled, "id", "the endpoint is disabled; enable it first")
    body = message_body(
        TEST_EVENT_TYPE, now(), {"message": "A test webhook from Switchboard.", "test": True}
    )
    async with in_transaction() as conn:
        return await _create_delivery(
            endpoint,
            event_id=None,
            event_type=TEST_EVENT_TYPE,
            body=body,
            connection=conn,
            manual=True,
        )


@operation("webhooks:manage")
async def resend_delivery(ctx: Context, *, delivery_id: int) -> WebhookDelivery:
    """A new round of attempts for a delivery: same body, same `webhook-id`."""
    principal = ctx.require_principal()
    async with in_transaction() as conn:
        delivery = await get_scoped(
            WebhookDelivery, principal.tenant_id, delivery_id, for_update=True
        )
        endpoint = await get_scoped(WebhookEndpoint, principal.tenant_id, delivery.endpoint_id)
        require(endpoint.enabled, "id", "the endpoint is disabled; enable it first")
        delivery.status = DeliveryStatus.PENDING.value
        delivery.attempt_count = 0
        delivery.next_attempt_at = now()
        await delivery.save(using_db=conn)
        await enqueue(
            DELIVER_JOB,
            {"delivery_id": delivery.id, "manual": True},
            tenant_id=principal.tenant_id,
            connection=conn,
        )
    return delivery


DELIVERY_STATUSES = {s.value for s in DeliveryStatus}


@operation("webhooks:manage")
async def list_deliveries(
    ctx: Context,
    *,
    endpoint_id: int | None,
    status: str | None,
    first: int | None,
    after: str | None,
) -> Page[WebhookDelivery]:
    principal = ctx.require_principal()
    qs = scoped(WebhookDelivery, principal.tenant_id)
    if endpoint_id is not None:
        await get_scoped(WebhookEndpoint, principal.tenant_id, endpoint_id)
        qs = qs.filter(endpoint_id=endpoint_id)
    if status is not None:
        require(status in DELIVERY_STATUSES, "status", "is not a delivery status")
        qs = qs.filter(status=status)
    return await page_of(ctx, qs, first=first, after=after)


async def list_attempts(
    ctx: Context, *, delivery_id: int, first: int | None, after: str | None
) -> Page[WebhookAttempt]:
    principal = ctx.require("webhooks:manage")
    return await page_of(
        ctx,
        scoped(WebhookAttempt, principal.tenant_id).filter(delivery_id=delivery_id),
        first=first,
        after=after,
    )


# Attempts --------------------------------------------------------------------------------


@dataclass
class Outcome:
    status_code: int | None = None
    body: str | None = None
    error: str | None = None
    timed_out: bool = False
    retry_after: float | None = None
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def parse_retry_after(value: str | None, at: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when.timestamp() - (time.time() if at is None else at)
    return min(max(0.0, delta), MAX_RETRY_AFTER)


async def post(settings: Settings, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """One guarded POST: SSRF-checked and pinned, no redirects, 2 s connect / 15 s total."""
    policy = policy_for(settings)
    started = time.perf_counter()
    outcome = Outcome()
    try:
        target = check_url(url, policy)  # dial the URL exactly as it was checked
        async with (
            guarded_session(
                policy, connect_timeout=CONNECT_TIMEOUT, total_timeout=TOTAL_TIMEOUT
            ) as session,
            session.post(target.url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            outcome.status_code = response.status
            outcome.retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raw = await response.content.read(RESPONSE_BODY_LIMIT)
            outcome.body = raw.decode("utf-8", errors="replace")
    except UnsafeDestination as exc:
        outcome = Outcome(error=f"refused: {exc.reason}")  # nothing of a refused address
    except (TimeoutError, aiohttp.ServerTimeoutError):
        outcome.error = "timed out"
        outcome.timed_out = True
    except aiohttp.ClientError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"[:1000]
    except OSError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"[:1000]
    outcome.duration_ms = round((time.perf_counter() - started) * 1000)
    if outcome.status_code is not None and not outcome.ok and outcome.error is None:
        outcome.error = f"HTTP {outcome.status_code}"
        if 300 <= outcome.status_code < 400:
            outcome.error += " (redirects are not followed)"
    return outcome


def _span(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    return f"{seconds} seconds"


def next_delay(
    attempts_made: int, outcome: Outcome, schedule: Sequence[float] = RETRY_SCHEDULE
) -> float | None:
    """Seconds until the next attempt, or None when the schedule is exhausted.
    `schedule` is WEBHOOK_RETRY_SCHEDULE (Svix's by default)."""
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311
    if outcome.timed_out or outcome.status_code == 429:
        delay = max(delay, MIN_DELAY_AFTER_THROTTLE)
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    return delay


async def disable_endpoint(
    endpoint: WebhookEndpoint, reason: str, connection: BaseDBAsyncClient
) -> bool:
    """Disable once and tell the owner with `webhook_endpoint.disabled`; False if already off."""
    moment = now()
    changed = (
        await WebhookEndpoint.filter(id=endpoint.id, enabled=True)
        .using_db(connection)
        .update(enabled=False, disabled_at=moment, disabled_reason=reason[:300])
    )
    if not changed:
        return False
    endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = False, moment, reason
    await emit(
        endpoint.tenant_id,
        DISABLED_EVENT_TYPE,
        {"endpointId": endpoint.id, "url": endpoint.url, "reason": reason},
        connection=connection,
    )
    log.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
    return True


async def attempt_delivery(delivery_id: int, *, manual: bool = False) -> float | None:
    """Make one attempt; returns the seconds until the next one, or None when done."""
    settings = current_settings()
    delivery = await WebhookDelivery.filter(id=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING.value:
        return None  # deleted, or finished by an earlier run of this job
    endpoint = await WebhookEndpoint.filter(id=delivery.endpoint_id).first()
    if endpoint is None:
        return None
    if not endpoint.enabled:
        await WebhookDelivery.filter(id=delivery.id).update(
            status=DeliveryStatus.FAILED.value,
            next_attempt_at=None,
            last_error="the endpoint is disabled",
        )
        return None

    # An attempt a dying worker left open is closed as interrupted; this one follows it.
    moment = now()
    await WebhookAttempt.filter(delivery_id=delivery.id, finished_at=None).update(
        finished_at=moment, error="interrupted: the worker stopped during this attempt"
    )
    number = await WebhookAttempt.filter(delivery_id=delivery.id).count() + 1
    timestamp = int(time.time())
    attempt = await WebhookAttempt.create(
        tenant_id=delivery.tenant_id,
        delivery_id=delivery.id,
        number=number,
        timestamp=timestamp,
        manual=manual and delivery.attempt_count == 0,
    )
    attempts_made = delivery.attempt_count + 1
    await WebhookDelivery.filter(id=delivery.id).update(attempt_count=attempts_made)

    body = delivery.body.encode()
    headers = signed_headers(
        live_secrets(settings, endpoint, moment), delivery.message_id, body, timestamp
    )
    headers.update({"content-type": "application/json", "user-agent": USER_AGENT})
    outcome = await post(settings, endpoint.url, body, headers)

    finished = now()
    delay: float | None = None
    async with in_transaction() as conn:
        await (
            WebhookAttempt.filter(id=attempt.id)
            .using_db(conn)
            .update(
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                response_body=outcome.body,
                error=outcome.error,
                finished_at=finished,
            )
        )
        values: dict[str, Any] = {
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
        }
        if outcome.ok:
            values.update(
                status=DeliveryStatus.SUCCEEDED.value, delivered_at=finished, next_attempt_at=None
            )
            await (
                WebhookEndpoint.filter(id=endpoint.id)
                .using_db(conn)
                .update(last_success_at=finished, failing_since=None)
            )
        elif outcome.status_code == 410:
            values.update(status=DeliveryStatus.FAILED.value, next_attempt_at=None)
            await disable_endpoint(endpoint, "the endpoint answered 410 Gone", conn)
        else:
            failing_since = endpoint.failing_since or finished
            if endpoint.failing_since is None:
                await (
                    WebhookEndpoint.filter(id=endpoint.id, failing_since=None)
                    .using_db(conn)
                    .update(failing_since=finished)
                )
            limit = dt.timedelta(seconds=settings.webhook_disable_after_seconds)
            if finished - failing_since >= limit:
                values.update(status=DeliveryStatus.FAILED.value, next_attempt_at=None)
                await disable_endpoint(
                    endpoint, f"failing with no successful delivery for {_span(limit)}", conn
                )
            else:
                delay = next_delay(attempts_made, outcome, settings.webhook_retry_schedule)
                if delay is None:
                    values.update(status=DeliveryStatus.FAILED.value, next_attempt_at=None)
                else:
                    values["next_attempt_at"] = finished + dt.timedelta(seconds=delay)
        await WebhookDelivery.filter(id=delivery.id).using_db(conn).update(**values)
    return delay


@job_handler(DELIVER_JOB, max_attempts=25)
async def deliver_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    """One attempt per run; the next one is scheduled with RetryLater (the Svix schedule)."""
    delay = await attempt_delivery(int(payload["delivery_id"]), manual=bool(payload.get("manual")))
    if delay is not None:
        raise RetryLater(delay, "next webhook attempt")
