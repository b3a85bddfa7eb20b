"""PayPal (https://developer.paypal.com/api/rest/): Orders v2, captures and refunds, over
the shared layer.

No SDK: PayPal's Python server SDK is synchronous, so the client speaks the documented REST
API through `providers.http`:

- **Auth**: `POST /v1/oauth2/token` with HTTP Basic (client id, secret) and
  `grant_type=client_credentials` → `{"access_token", "expires_in"}` (about nine hours).
  The token is kept per credential (`providers.tokens.TokenCache`, one per process in the
  registry) until shortly before it expires or PayPal refuses it (401), then renewed once
  for every concurrent caller and the refused call made again, once.
- **Orders**: `POST /v2/checkout/orders` (intent CAPTURE, one purchase unit whose
  `custom_id` names the gateway's payment) → the order with its `payer-action` link where
  the payer approves it; `GET /v2/checkout/orders/{id}`; `POST …/{id}/capture` (what the
  product documents call "execute") → the capture (`COMPLETED`, `PENDING` or `DECLINED`).
- **Refunds**: `POST /v2/payments/captures/{id}/refund` (an amount, or all that is left),
  `GET /v2/payments/refunds/{id}`.
- **Certificates**: the webhook signing certificate named by a webhook's
  `PAYPAL-CERT-URL` (`fetch_certificate`), for the offline signature check.

Every POST carries `PayPal-Request-Id` (the layer's idempotency header for this provider):
PayPal answers a repeated id with the first request's result, so a retried create,
capture or refund never makes a second one, and the layer may retry them.

Errors are `{"name": "UNPROCESSABLE_ENTITY", "message", "debug_id", "details": [{"issue":
"INSTRUMENT_DECLINED", "description"}]}` (the OAuth endpoint's are `{"error",
"error_description"}`): `parse_error` keeps the first detail's issue, else the name, as
the vendor code.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from providers.errors import CircuitOpen, ProviderError
from providers.http import ProviderConfig, ProviderHTTP, ProviderResponse, Timeouts
from providers.retry import RetryPolicy
from providers.tokens import Issued, TokenCache

PROVIDER = "paypal"
API_URL = "https://api-m.paypal.com"
SANDBOX_API_URL = "https://api-m.sandbox.paypal.com"

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=30.0, total=40.0),
    pool_size=20,
    concurrency=20,
    rate_limit="30/second",
    rate_limit_max_wait=2.0,
    retry=RetryPolicy(max_attempts=3, base=0.5, cap=8.0, budget=60.0),
    idempotency_header="PayPal-Request-Id",
)
VERIFY_TIMEOUTS = Timeouts(connect=3.0, read=5.0, total=5.0)
MAX_CERTIFICATE_BYTES = 16 * 1024

# PayPal issues the gateway acts on.
INSTRUMENT_DECLINED = "INSTRUMENT_DECLINED"  # the payer's funding source was refused
ORDER_NOT_APPROVED = "ORDER_NOT_APPROVED"  # capture before the payer approved
ORDER_ALREADY_CAPTURED = "ORDER_ALREADY_CAPTURED"


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """PayPal's error body -> (the first detail's issue, else its name; a message)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, body.decode("utf-8", "replace")[:500] if body else ""
    if "error" in data and "name" not in data:  # the OAuth endpoint
        return str(data.get("error") or "") or None, str(data.get("error_description") or "")
    details = data.get("details")
    first = details[0] if isinstance(details, list) and details else None
    if isinstance(first, dict) and first.get("issue"):
        description = first.get("description") or data.get("message") or ""
        return str(first["issue"]), str(description)
    return (str(data.get("name") or "") or None), str(data.get("message") or "")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class PayPalCredential:
    """A REST app: its client id and secret (and the webhook id its events are signed for)."""

    client_id: str
    client_secret: str = field(repr=False)

    @classmethod
    def of(cls, secrets: Mapping[str, str]) -> PayPalCredential:
        return cls(secrets.get("client_id", ""), secrets.get("client_secret", ""))

    @property
    def secret(self) -> str:
        """What the layer keys this credential's breaker and budget on (never logged)."""
        return f"{self.client_id}:{self.client_secret}"

    def cache_key(self, base_url: str) -> str:
        raw = f"{base_url}\x00{self.client_id}\x00{self.client_secret}"
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Capture:
    id: str
    status: str  # COMPLETED | PENDING | DECLINED | FAILED | REFUNDED | PARTIALLY_REFUNDED
    amount: str | None
    currency: str | None
    custom_id: str | None
    order_id: str | None
    reason: str | None  # status_details.reason (why PENDING or DECLINED)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Capture:
        amount = _mapping(data.get("amount"))
        details = data.get("status_details")
        related = (data.get("supplementary_data") or {}).get("related_ids") or {}
        return cls(
            id=str(data.get("id") or ""),
            status=str(data.get("status") or ""),
            amount=amount.get("value"),
            currency=amount.get("currency_code"),
            custom_id=data.get("custom_id"),
            order_id=related.get("order_id") if isinstance(related, dict) else None,
            reason=details.get("reason") if isinstance(details, dict) else None,
        )


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    status: str  # CREATED | SAVED | APPROVED | VOIDED | COMPLETED | PAYER_ACTION_REQUIRED
    approve_url: str | None
    custom_id: str | None
    captures: list[Capture]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Order:
        approve = None
        for link in data.get("links") or []:
            if isinstance(link, dict) and link.get("rel") in ("payer-action", "approve"):
                approve = str(link.get("href") or "") or None
        custom_id = None
        captures: list[Capture] = []
        for unit in data.get("purchase_units") or []:
            if not isinstance(unit, dict):
                continue
            custom_id = custom_id or unit.get("custom_id")
            payments = _mapping(unit.get("payments"))
            captures.extend(
                Capture.of(c) for c in payments.get("captures") or [] if isinstance(c, dict)
            )
        return cls(
            id=str(data.get("id") or ""),
            status=str(data.get("status") or ""),
            approve_url=approve,
            custom_id=custom_id,
            captures=captures,
        )


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    status: str  # COMPLETED | PENDING | FAILED | CANCELLED
    amount: str | None
    currency: str | None
    custom_id: str | None
    capture_id: str | None
    reason: str | None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Refund:
        amount = _mapping(data.get("amount"))
        details = data.get("status_details")
        capture_id = None
        for link in data.get("links") or []:
            if isinstance(link, dict) and link.get("rel") == "up":
                href = str(link.get("href") or "")
                if "/captures/" in href:
                    capture_id = href.rsplit("/captures/", 1)[1].split("/")[0] or None
        return cls(
            id=str(data.get("id") or ""),
            status=str(data.get("status") or ""),
            amount=amount.get("value"),
            currency=amount.get("currency_code"),
            custom_id=data.get("custom_id"),
            capture_id=capture_id,
            reason=details.get("reason") if isinstance(details, dict) else None,
        )


@dataclass(frozen=True, slots=True)
class PayPalSubscription:
    id: str
    status: str  # APPROVAL_PENDING | APPROVED | ACTIVE | SUSPENDED | CANCELLED | EXPIRED
    plan_id: str | None
    custom_id: str | None
    approve_url: str | None
    next_billing_time: str | None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> PayPalSubscription:
        approve = None
        for link in data.get("links") or []:
            if isinstance(link, dict) and link.get("rel") == "approve":
                approve = str(link.get("href") or "") or None
        billing = _mapping(data.get("billing_info"))
        return cls(
            id=str(data.get("id") or ""),
            status=str(data.get("status") or ""),
            plan_id=data.get("plan_id"),
            custom_id=data.get("custom_id"),
            approve_url=approve,
            next_billing_time=billing.get("next_billing_time"),
        )


class PayPalClient:
    """One REST app's view of PayPal. Cheap to build per call; the session and the token
    cache are the registry's."""

    def __init__(
        self,
        http: ProviderHTTP,
        tokens: TokenCache,
        credential: PayPalCredential,
        *,
        base_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        own_credential: bool = False,
        guard_url: bool = False,
    ) -> None:
        self.http = http
        self.tokens = tokens
        self.credential = credential
        self.base_url = (base_url or API_URL).rstrip("/")
        self.labels = dict(labels or {})
        self.own_credential = own_credential
        self.guard_url = guard_url

    def __repr__(self) -> str:  # never the secret
        return f"PayPalClient(client_id={self.credential.client_id!r}, base_url={self.base_url!r})"

    async def _issue(self) -> Issued:
        """A new access token (`POST /v1/oauth2/token`, client credentials)."""
        cred = self.credential
        basic = base64.b64encode(f"{cred.client_id}:{cred.client_secret}".encode()).decode()
        response = await self.http.request(
            "POST",
            f"{self.base_url}/v1/oauth2/token",
            operation="oauth2.token",
            credential=cred.secret,
            headers={
                "Authorization": f"Basic {basic}",
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            data="grant_type=client_credentials",
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )
        data = response.json()
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderError(
                PROVIDER, "oauth2.token", status=response.status, vendor_code="no_token",
                message="the token endpoint answered without an access token", retryable=False,
            )  # fmt: skip
        lifetime = data.get("expires_in")
        return Issued(token, float(lifetime) if isinstance(lifetime, int | float) else 300.0)

    async def _token(self, refused: str | None = None) -> str:
        key = self.credential.cache_key(self.base_url)
        return await self.tokens.token(key, self._issue, refused=refused)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        body: Any = None,
        request_id: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> ProviderResponse:
        """One call with the cached token; a 401 renews it once and tries again."""
        token = await self._token()
        for attempt in (1, 2):
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "Prefer": "return=representation",
            }
            if body is not None:
                headers["Content-Type"] = "application/json"
            try:
                return await self.http.request(
                    method,
                    f"{self.base_url}{path}",
                    operation=operation,
                    # Keyed on the access token as well: a burst of calls refused with a
                    # token PayPal expired trips that token's breaker, not the app's.
                    credential=f"{self.credential.secret}\x00{token}",
                    headers=headers,
                    data=None if body is None else json.dumps(body),
                    idempotency_key=request_id,
                    timeouts=timeouts,
                    parse_error=parse_error,
                    labels=self.labels,
                    own_credential=self.own_credential,
                    guard_url=self.guard_url,
                )
            except ProviderError as err:
                # 401: PayPal refused this token. An open breaker of this token (others
                # were refused with it a moment ago): the same, learnt without asking.
                stale = err.status == 401 or (
                    isinstance(err, CircuitOpen) and err.scope == "credential"
                )
                if not stale or attempt == 2:
                    raise
                token = await self._token(refused=token)
        raise AssertionError("unreachable")  # pragma: no cover

    # Orders -----------------------------------------------------------------------

    async def create_order(
        self,
        *,
        amount: str,
        currency: str,
        custom_id: str,
        request_id: str,
        description: str | None = None,
        return_url: str | None = None,
        cancel_url: str | None = None,
    ) -> Order:
        """An order to capture once the payer approved it (its `approve_url`)."""
        unit: dict[str, Any] = {
            "reference_id": "default",
            "custom_id": custom_id,
            "amount": {"currency_code": currency, "value": amount},
        }
        if description:
            unit["description"] = description[:127]
        context: dict[str, Any] = {"user_action": "PAY_NOW", "shipping_preference": "NO_SHIPPING"}
        if return_url:
            context["return_url"] = return_url
        if cancel_url:
            context["cancel_url"] = cancel_url
        body = {
            "intent": "CAPTURE",
            "purchase_units": [unit],
            "payment_source": {"paypal": {"experience_context": context}},
        }
        response = await self._call(
            "POST", "/v2/checkout/orders", operation="orders.create", body=body,
            request_id=request_id,
        )  # fmt: skip
        return Order.of(response.json())

    async def get_order(self, order_id: str) -> Order:
        response = await self._call(
            "GET", f"/v2/checkout/orders/{quote(order_id, safe='')}", operation="orders.get"
        )
        return Order.of(response.json())

    async def capture_order(self, order_id: str, *, request_id: str) -> Order:
        """Take the money of an approved order (the documents' "execute")."""
        response = await self._call(
            "POST",
            f"/v2/checkout/orders/{quote(order_id, safe='')}/capture",
            operation="orders.capture",
            body={},
            request_id=request_id,
        )
        return Order.of(response.json())

    # Refunds ----------------------------------------------------------------------

    async def refund_capture(
        self,
        capture_id: str,
        *,
        request_id: str,
        custom_id: str,
        amount: str | None = None,
        currency: str | None = None,
        note: str | None = None,
    ) -> Refund:
        """Send back `amount` of a capture (None: all that is left of it)."""
        body: dict[str, Any] = {"custom_id": custom_id}
        if amount is not None:
            body["amount"] = {"value": amount, "currency_code": currency}
        if note:
            body["note_to_payer"] = note[:255]
        response = await self._call(
            "POST",
            f"/v2/payments/captures/{quote(capture_id, safe='')}/refund",
            operation="captures.refund",
            body=body,
            request_id=request_id,
        )
        return Refund.of(response.json())

    async def get_refund(self, refund_id: str) -> Refund:
        response = await self._call(
            "GET", f"/v2/payments/refunds/{quote(refund_id, safe='')}", operation="refunds.get"
        )
        return Refund.of(response.json())

    # Subscriptions ------------------------------------------------------------------

    async def create_subscription(
        self,
        *,
        plan_id: str,
        custom_id: str,
        request_id: str,
        return_url: str | None = None,
        cancel_url: str | None = None,
    ) -> PayPalSubscription:
        """A subscription to `plan_id`, waiting for its payer's approval (`approve_url`)."""
        context: dict[str, Any] = {"user_action": "SUBSCRIBE_NOW", "shipping_preference":
                                   "NO_SHIPPING"}  # fmt: skip
        if return_url:
            context["return_url"] = return_url
        if cancel_url:
            context["cancel_url"] = cancel_url
        body = {"plan_id": plan_id, "custom_id": custom_id, "application_context": context}
        response = await self._call(
            "POST", "/v1/billing/subscriptions", operation="subscriptions.create", body=body,
            request_id=request_id,
        )  # fmt: skip
        return PayPalSubscription.of(response.json())

    async def get_subscription(self, subscription_id: str) -> PayPalSubscription:
        response = await self._call(
            "GET",
            f"/v1/billing/subscriptions/{quote(subscription_id, safe='')}",
            operation="subscriptions.get",
        )
        return PayPalSubscription.of(response.json())

    async def cancel_subscription(self, subscription_id: str, *, reason: str) -> None:
        """Cancel it (204); PayPal answers 422 SUBSCRIPTION_STATUS_INVALID when it is not
        active or suspended any more."""
        await self._call(
            "POST",
            f"/v1/billing/subscriptions/{quote(subscription_id, safe='')}/cancel",
            operation="subscriptions.cancel",
            body={"reason": reason[:128] or "Canceled"},
            request_id=f"sb-cancel-{subscription_id}",
        )

    # Key check and certificates -----------------------------------------------------

    async def verify(self) -> None:
        """The cheap authenticated call: get a token (a wrong id or secret is a 401
        `invalid_client`)."""
        self.tokens.forget(self.credential.cache_key(self.base_url))
        await self._token()


async def verify_key(client: PayPalClient) -> None:
    """Raises ProviderError when PayPal does not accept the credential."""
    await client.verify()


async def fetch_certificate(http: ProviderHTTP, url: str, *, guard_url: bool) -> bytes:
    """The PEM certificate at a webhook's `PAYPAL-CERT-URL` (the caller checked the URL's
    host). Bounded in size; a GET, retried by the layer."""
    response = await http.request(
        "GET",
        url,
        operation="notifications.certs",
        headers={"Accept": "*/*"},
        timeouts=VERIFY_TIMEOUTS,
        parse_error=parse_error,
        guard_url=guard_url,
    )
    if len(response.body) > MAX_CERTIFICATE_BYTES:
        raise ProviderError(
            PROVIDER, "notifications.certs", status=response.status,
            vendor_code="certificate_too_large", message="the certificate is too large",
            retryable=False,
        )  # fmt: skip
    return response.body
