"""Stripe (https://docs.stripe.com/api): customers, payment intents and refunds with the
official `stripe` package's async client, every HTTP request of which goes through the
shared provider layer.

Why the SDK's `HTTPClient` is replaced rather than the SDK's call wrapped in `guard()`:
the SDK makes the HTTP requests itself (one logical call may be one request, or several
for an expansion or a list page), and what the layer must see is each request: its
Idempotency-Key (retries are allowed only for keyed or idempotent calls), its status (a
5xx or a timeout feeds the provider's breaker, a 401 the credential's), the outbound rate
budget per credential, the pooled session, and the outbound guard for a tenant-set base
URL. `GuardedHTTPClient.request_async` hands each request to `ProviderHTTP.request()`;
the SDK's own retries are off (`max_network_retries=0`), so there is exactly one retry
loop (ours, honouring `Retry-After` and the call budget). A refusal the caller caused (a
4xx: a decline, a bad parameter, an idempotency mismatch) is handed back to the SDK as
the answer it is, so the SDK raises its typed error, which `_call` turns into a
`ProviderError` (`CardDeclined` for a card error, carrying Stripe's `decline_code`).

Idempotency: the SDK puts a random `Idempotency-Key` on every POST; callers here pass
their own, derived from the gateway's row and operation (`pay-<id>-create`), so a retried
mutation, a retried job or a second process asks Stripe for the same object, never a
second charge.

Money is in minor units here (Stripe's integers); `kit.money` converts.

One `stripe.StripeClient` per credential and base URL (building one costs ~1.5 ms), kept
by `StripeProvider`, which the registry owns.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import stripe

from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP, SdkClients, Timeouts
from providers.retry import RetryPolicy

PROVIDER = "stripe"
API_URL = "https://api.stripe.com"
API_VERSION = stripe.api_version

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=30.0, total=40.0),
    pool_size=50,
    concurrency=50,
    # Stripe's live-mode limit is 100 read and 100 write requests per second per account.
    rate_limit="100/second",
    rate_limit_max_wait=1.0,
    retry=RetryPolicy(max_attempts=3, base=0.5, cap=4.0, budget=60.0),
)
VERIFY_TIMEOUTS = Timeouts(connect=3.0, read=5.0, total=5.0)

# Labels of the call in progress (tenant, request id) for the layer's error log: the
# SDK clients are shared by callers, so the labels travel with the task.
_labels: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "stripe_labels", default=None
)
_ID = re.compile(r"^[a-z]{1,8}_[A-Za-z0-9_]+$")  # pi_3Mtw…, cus_NffrFeUfNV2Hib

T = TypeVar("T")


def _is_id(segment: str) -> bool:
    """An object id, not an object name (`payment_intents`): ids carry digits or capitals."""
    return bool(_ID.match(segment)) and any(c.isdigit() or c.isupper() for c in segment)


def operation_of(method: str, url: str) -> str:
    """`POST …/v1/payment_intents/pi_1/confirm` → `payment_intents.confirm`."""
    path = url.split("?", 1)[0]
    parts = [p for p in path.split("/v1/", 1)[-1].split("/") if p]
    names = [p for p in parts if not _is_id(p)]
    has_id = len(names) != len(parts)
    base = ".".join(names) or "root"
    if len(names) > 1 and has_id:
        return base  # an action on one object: confirm, cancel
    if method.lower() == "post":
        return f"{base}.update" if has_id else f"{base}.create"
    if method.lower() == "delete":
        return f"{base}.delete"
    return f"{base}.retrieve" if has_id else f"{base}.list"


class GuardedHTTPClient(stripe.HTTPClient):
    """The SDK's HTTP transport, made of the provider layer (see the module docstring)."""

    name = "switchboard"

    def __init__(
        self, http: ProviderHTTP, api_key: str, *, own_credential: bool, guard_url: bool
    ) -> None:
        super().__init__()
        self.http = http
        self._api_key = api_key
        self.own_credential = own_credential
        self.guard_url = guard_url

    def __repr__(self) -> str:  # never the key
        return f"GuardedHTTPClient(own={self.own_credential})"

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        refused: list[tuple[int, Mapping[str, str], bytes]] = []

        def keep(status: int, resp_headers: Mapping[str, str], body: bytes) -> Any:
            refused.append((status, resp_headers, body))
            return parse_error(status, resp_headers, body)

        try:
            response = await self.http.request(
                method,
                url,
                operation=operation_of(method, url),
                credential=self._api_key,
                headers=dict(headers),
                data=post_data,
                # The SDK set it (ours, or its random one on a POST): the layer may retry.
                idempotency_key=headers.get("Idempotency-Key"),
                parse_error=keep,
                labels=_labels.get() or {},
                own_credential=self.own_credential,
                guard_url=self.guard_url,
            )
        except ProviderError as err:
            # What the vendor answered about the caller's request (a 4xx, or a 401/403
            # once the layer counted it): the SDK reads the body into its typed error.
            if (
                refused
                and err.status is not None
                and 400 <= err.status < 500
                and (err.status not in (408, 429))
            ):
                status, resp_headers, body = refused[-1]
                return body, status, resp_headers
            raise
        return response.body, response.status, response.headers

    async def close_async(self) -> None:
        """The session is the layer's (closed by the registry)."""

    def close(self) -> None:
        """Nothing of its own to close."""


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """Stripe's error body: {"error": {"type", "code", "decline_code", "message", ...}}."""
    import json

    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("decline_code") or err.get("code") or err.get("type")
        return (str(code) if code else None), str(err.get("message") or "")
    return None, body.decode("utf-8", "replace")[:500] if body else ""


class CardDeclined(ProviderError):
    """The card was declined (HTTP 402, `card_error`): Stripe's `decline_code` and the
    payment intent as it stands after the decline (when Stripe sent it)."""

    def __init__(
        self,
        operation: str,
        *,
        code: str | None,
        decline_code: str | None,
        message: str,
        intent: PaymentIntent | None,
    ) -> None:
        super().__init__(
            PROVIDER, operation, status=402, vendor_code=decline_code or code,
            message=message, retryable=False,
        )  # fmt: skip
        self.code = code
        self.decline_code = decline_code
        self.intent = intent


# Objects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    email: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    status: str  # requires_payment_method | requires_confirmation | requires_action |
    # processing | requires_capture | canceled | succeeded
    amount: int  # minor units
    currency: str  # upper case ISO 4217
    amount_received: int
    customer: str | None
    client_secret: str | None
    next_action_url: str | None  # 3-D Secure: where the customer authenticates
    error_code: str | None  # last_payment_error.code
    decline_code: str | None  # last_payment_error.decline_code
    error_message: str | None
    latest_charge: str | None
    created: int
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> PaymentIntent:
        action = data.get("next_action") or {}
        url = None
        if isinstance(action, Mapping):
            redirect = action.get("redirect_to_url") or {}
            url = redirect.get("url") if isinstance(redirect, Mapping) else None
        error = data.get("last_payment_error") or {}
        if not isinstance(error, Mapping):
            error = {}
        customer = data.get("customer")
        if isinstance(customer, Mapping):
            customer = customer.get("id")
        charge = data.get("latest_charge")
        if isinstance(charge, Mapping):
            charge = charge.get("id")
        return cls(
            id=str(data["id"]),
            status=str(data.get("status") or ""),
            amount=int(data.get("amount") or 0),
            currency=str(data.get("currency") or "").upper(),
            amount_received=int(data.get("amount_received") or 0),
            customer=str(customer) if customer else None,
            client_secret=data.get("client_secret"),
            next_action_url=str(url) if url else None,
            error_code=error.get("code"),
            decline_code=error.get("decline_code"),
            error_message=error.get("message"),
            latest_charge=str(charge) if charge else None,
            created=int(data.get("created") or 0),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    status: str  # pending | requires_action | succeeded | failed | canceled
    amount: int
    currency: str
    payment_intent: str | None
    failure_reason: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Refund:
        intent = data.get("payment_intent")
        if isinstance(intent, Mapping):
            intent = intent.get("id")
        return cls(
            id=str(data["id"]),
            status=str(data.get("status") or ""),
            amount=int(data.get("amount") or 0),
            currency=str(data.get("currency") or "").upper(),
            payment_intent=str(intent) if intent else None,
            failure_reason=data.get("failure_reason"),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )


def _id_of(value: Any) -> str | None:
    """An id, or an expanded object's id."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> CheckoutSession:
        return cls(id=str(data["id"]), url=str(data.get("url") or ""))


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as the gateway reads it (its first item's price is the plan)."""

    id: str
    status: str  # incomplete, trialing, active, past_due, canceled, unpaid, paused, …
    customer: str
    price: str | None
    current_period_end: int | None
    cancel_at_period_end: bool
    metadata: dict[str, str]
    item_id: str | None = None
    latest_invoice: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Subscription:
        items = data.get("items") if isinstance(data.get("items"), dict) else {}
        first: Any = next(iter(items.get("data") or []), {}) if isinstance(items, dict) else {}
        price = first.get("price") if isinstance(first, dict) else None
        price_id = price.get("id") if isinstance(price, dict) else price
        end = data.get("current_period_end") or (
            first.get("current_period_end") if isinstance(first, dict) else None
        )
        customer = data.get("customer")
        if isinstance(customer, dict):
            customer = customer.get("id")
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        return cls(
            id=str(data["id"]),
            status=str(data.get("status") or ""),
            customer=str(customer or ""),
            price=str(price_id) if price_id else None,
            current_period_end=int(end) if isinstance(end, int) else None,
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            metadata={str(k): str(v) for k, v in (meta or {}).items()},
            item_id=first.get("id") if isinstance(first, dict) else None,
            latest_invoice=_id_of(data.get("latest_invoice")),
        )


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    number: str | None
    status: str | None  # draft, open, paid, uncollectible, void
    currency: str
    amount_due: int
    amount_paid: int
    created: int
    period_start: int | None
    period_end: int | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    customer: str | None = None
    subscription: str | None = None
    description: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Invoice:
        return cls(
            customer=_id_of(data.get("customer")),
            subscription=_id_of(data.get("subscription")),
            description=data.get("description"),
            id=str(data["id"]),
            number=data.get("number"),
            status=data.get("status"),
            currency=str(data.get("currency") or "").upper(),
            amount_due=int(data.get("amount_due") or 0),
            amount_paid=int(data.get("amount_paid") or 0),
            created=int(data.get("created") or 0),
            period_start=data.get("period_start"),
            period_end=data.get("period_end"),
            hosted_invoice_url=data.get("hosted_invoice_url"),
            invoice_pdf=data.get("invoice_pdf"),
        )


def _plain(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain dicts and lists."""
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


# The client ------------------------------------------------------------------------------


class StripeClient:
    """One credential's view of Stripe (cheap: the SDK client behind it is shared)."""

    def __init__(self, sdk: stripe.StripeClient, *, labels: Mapping[str, str] | None = None):
        self._sdk = sdk
        self.labels = dict(labels or {})

    def __repr__(self) -> str:
        return "StripeClient()"

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        token = _labels.set(self.labels)
        try:
            return await fn()
        except stripe.CardError as err:
            body = err.json_body.get("error", {}) if isinstance(err.json_body, dict) else {}
            intent = body.get("payment_intent")
            raise CardDeclined(
                operation,
                code=err.code,
                decline_code=body.get("decline_code"),
                message=str(body.get("message") or err.user_message or "declined"),
                intent=PaymentIntent.of(intent) if isinstance(intent, dict) else None,
            ) from None
        except stripe.StripeError as err:
            body = err.json_body.get("error", {}) if isinstance(err.json_body, dict) else {}
            raise ProviderError(
                PROVIDER,
                operation,
                status=err.http_status,
                vendor_code=body.get("code") or body.get("type") or type(err).__name__,
                message=str(body.get("message") or err.user_message or "")[:500],
                retryable=False,
            ) from None
        finally:
            _labels.reset(token)

    def _options(self, idempotency_key: str | None) -> Any:
        return {"idempotency_key": idempotency_key} if idempotency_key else {}

    async def create_customer(
        self, *, email: str | None, name: str | None, metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> Customer:  # fmt: skip
        params: dict[str, Any] = {"metadata": dict(metadata)}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        data = await self._call(
            "customers.create",
            lambda: self._sdk.v1.customers.create_async(
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        plain = _plain(data)
        return Customer(id=str(plain["id"]), email=plain.get("email"), name=plain.get("name"))

    async def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        idempotency_key: str,
        customer: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        payment_method: str | None = None,
        confirm: bool = False,
        return_url: str | None = None,
    ) -> PaymentIntent:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "metadata": dict(metadata or {}),
        }
        if customer:
            params["customer"] = customer
        if description:
            params["description"] = description
        if payment_method:
            params["payment_method"] = payment_method
            params["payment_method_types"] = ["card"]
        if confirm:
            params["confirm"] = True
            if return_url:
                params["return_url"] = return_url
        data = await self._call(
            "payment_intents.create",
            lambda: self._sdk.v1.payment_intents.create_async(
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        return PaymentIntent.of(_plain(data))

    async def retrieve_payment_intent(self, intent_id: str) -> PaymentIntent:
        data = await self._call(
            "payment_intents.retrieve",
            lambda: self._sdk.v1.payment_intents.retrieve_async(intent_id),
        )
        return PaymentIntent.of(_plain(data))

    async def confirm_payment_intent(
        self,
        intent_id: str,
        *,
        idempotency_key: str,
        payment_method: str | None = None,
        return_url: str | None = None,
    ) -> PaymentIntent:
        params: dict[str, Any] = {}
        if payment_method:
            params["payment_method"] = payment_method
        if return_url:
            params["return_url"] = return_url
        data = await self._call(
            "payment_intents.confirm",
            lambda: self._sdk.v1.payment_intents.confirm_async(
                intent_id,
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        return PaymentIntent.of(_plain(data))

    async def cancel_payment_intent(self, intent_id: str, *, idempotency_key: str) -> PaymentIntent:
        data = await self._call(
            "payment_intents.cancel",
            lambda: self._sdk.v1.payment_intents.cancel_async(
                intent_id, {}, self._options(idempotency_key)
            ),
        )
        return PaymentIntent.of(_plain(data))

    async def create_refund(
        self,
        *,
        payment_intent: str,
        amount: int | None,
        idempotency_key: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Refund:
        params: dict[str, Any] = {
            "payment_intent": payment_intent,
            "metadata": dict(metadata or {}),
        }
        if amount is not None:
            params["amount"] = amount
        data = await self._call(
            "refunds.create",
            lambda: self._sdk.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        return Refund.of(_plain(data))

    # Billing (the SaaS's own subscriptions) -------------------------------------------

    async def create_checkout_session(
        self,
        *,
        customer: str,
        price: str,
        success_url: str,
        cancel_url: str,
        client_reference_id: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> CheckoutSession:
        """A hosted Checkout page subscribing `customer` to `price` (mode subscription);
        the subscription carries `metadata` too."""
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": customer,
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": client_reference_id,
            "metadata": dict(metadata),
            "subscription_data": {"metadata": dict(metadata)},
        }
        data = await self._call(
            "checkout.sessions.create",
            lambda: self._sdk.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        return CheckoutSession.of(_plain(data))

    async def create_portal_session(self, *, customer: str, return_url: str) -> str:
        """The billing portal's URL for `customer` (a short-lived session)."""
        data = await self._call(
            "billing_portal.sessions.create",
            lambda: self._sdk.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url}
            ),
        )
        return str(_plain(data)["url"])

    async def create_subscription(
        self,
        *,
        customer: str,
        price: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
        payment_method: str | None = None,
    ) -> Subscription:
        """A subscription of `customer` to `price`; its first invoice is charged to
        `payment_method` at once (without one, or declined, it stays `incomplete` with an
        open invoice to pay)."""
        params: dict[str, Any] = {
            "customer": customer,
            "items": [{"price": price}],
            "metadata": dict(metadata),
            "payment_behavior": "allow_incomplete",
        }
        if payment_method:
            params["default_payment_method"] = payment_method
        data = await self._call(
            "subscriptions.create",
            lambda: self._sdk.v1.subscriptions.create_async(
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        return Subscription.of(_plain(data))

    async def update_subscription(
        self,
        subscription_id: str,
        *,
        idempotency_key: str,
        price: str | None = None,
        item_id: str | None = None,
        cancel_at_period_end: bool | None = None,
    ) -> Subscription:
        """Change the price (of item `item_id`) or whether it ends at the period's end."""
        params: dict[str, Any] = {}
        if price is not None:
            params["items"] = [{"id": item_id, "price": price}]
        if cancel_at_period_end is not None:
            params["cancel_at_period_end"] = cancel_at_period_end
        data = await self._call(
            "subscriptions.update",
            lambda: self._sdk.v1.subscriptions.update_async(
                subscription_id,
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        return Subscription.of(_plain(data))

    async def cancel_subscription(self, subscription_id: str) -> Subscription:
        """End it now (DELETE: idempotent, so retried by the layer)."""
        data = await self._call(
            "subscriptions.cancel",
            lambda: self._sdk.v1.subscriptions.cancel_async(subscription_id),
        )
        return Subscription.of(_plain(data))

    async def create_invoice(
        self,
        *,
        customer: str,
        currency: str,
        lines: list[tuple[int, str]],
        idempotency_key: str,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Invoice:
        """A draft invoice with `lines` (minor units, description), each added with its
        own key derived from the invoice's."""
        params: dict[str, Any] = {
            "customer": customer,
            "currency": currency.lower(),
            "auto_advance": False,
            "collection_method": "charge_automatically",
            "metadata": dict(metadata or {}),
        }
        if description:
            params["description"] = description
        data = await self._call(
            "invoices.create",
            lambda: self._sdk.v1.invoices.create_async(
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        invoice = Invoice.of(_plain(data))
        for n, (amount, text) in enumerate(lines):
            item: dict[str, Any] = {
                "customer": customer, "invoice": invoice.id, "amount": amount,
                "currency": currency.lower(), "description": text,
            }  # fmt: skip
            await self._call(
                "invoiceitems.create",
                lambda item=item, n=n: self._sdk.v1.invoice_items.create_async(  # type: ignore[misc]
                    item,  # type: ignore[arg-type]
                    self._options(f"{idempotency_key}-line-{n}"),
                ),
            )
        return await self.retrieve_invoice(invoice.id)

    async def retrieve_invoice(self, invoice_id: str) -> Invoice:
        data = await self._call(
            "invoices.retrieve", lambda: self._sdk.v1.invoices.retrieve_async(invoice_id)
        )
        return Invoice.of(_plain(data))

    async def finalize_invoice(self, invoice_id: str, *, idempotency_key: str) -> Invoice:
        data = await self._call(
            "invoices.finalize",
            lambda: self._sdk.v1.invoices.finalize_invoice_async(
                invoice_id, {}, self._options(idempotency_key)
            ),
        )
        return Invoice.of(_plain(data))

    async def pay_invoice(
        self, invoice_id: str, *, idempotency_key: str, payment_method: str | None = None
    ) -> Invoice:
        """Charge an open invoice (a decline raises `CardDeclined`)."""
        params: dict[str, Any] = {}
        if payment_method:
            params["payment_method"] = payment_method
        data = await self._call(
            "invoices.pay",
            lambda: self._sdk.v1.invoices.pay_async(
                invoice_id,
                params,  # type: ignore[arg-type]
                self._options(idempotency_key),
            ),
        )
        return Invoice.of(_plain(data))

    async def list_invoices(
        self, *, customer: str, limit: int, starting_after: str | None = None
    ) -> tuple[list[Invoice], bool]:
        """One page of the customer's invoices, newest first, and whether more follow."""
        params: dict[str, Any] = {"customer": customer, "limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        data = await self._call(
            "invoices.list",
            lambda: self._sdk.v1.invoices.list_async(params),  # type: ignore[arg-type]
        )
        plain = _plain(data)
        rows = [Invoice.of(i) for i in plain.get("data") or [] if isinstance(i, dict)]
        return rows, bool(plain.get("has_more"))

    async def balance(self) -> None:
        """The account's balance: Stripe's cheap authenticated call."""
        await self._call("balance.retrieve", lambda: self._sdk.v1.balance.retrieve_async())


async def verify_key(client: StripeClient) -> None:
    """Raises ProviderError when Stripe did not accept the client's key."""
    await client.balance()


class StripeProvider:
    """The SDK clients, one per credential and base URL, on the registry's Stripe layer."""

    def __init__(self, http: ProviderHTTP) -> None:
        self.http = http
        self._clients: SdkClients[stripe.StripeClient] = SdkClients()

    def client(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        own_credential: bool = False,
        guard_url: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> StripeClient:
        url = (base_url or API_URL).rstrip("/")

        def make() -> stripe.StripeClient:
            return stripe.StripeClient(
                api_key,
                base_addresses={"api": url},
                max_network_retries=0,
                http_client=GuardedHTTPClient(
                    self.http, api_key, own_credential=own_credential, guard_url=guard_url
                ),
            )

        sdk = self._clients.get((api_key, url, own_credential, guard_url), make)
        return StripeClient(sdk, labels=labels)

    async def aclose(self) -> None:
        self._clients.take_all()
