"""Stripe sandbox: the part of https://api.stripe.com the gateway uses, as the official
`stripe` library speaks to it (the library runs against it unchanged, only the base
address differs).

- **Auth**: `Authorization: Bearer sk_…`; none → 401, a key containing `invalid` → 401
  `invalid_request_error` ("Invalid API Key provided"), as Stripe answers. Each key is an
  account of its own: its objects are invisible to other keys.
- **Bodies**: form-encoded with Stripe's brackets (`metadata[order]=7`,
  `payment_method_types[0]=card`, `expand[]=customer`); answers are JSON objects with
  `object`, `id`, `created`, `livemode: false`; `expand` works for `customer` and
  `latest_charge` on payment intents and `payment_intent` on refunds.
- **Lists**: `GET /v1/<objects>?limit=&starting_after=&ending_before=` (newest first,
  limit 1–100, default 10) answer `{"object": "list", "data", "has_more", "url"}`.
- **Objects**: customers (create, retrieve, list), payment intents (create — with
  `confirm=true` too —, retrieve, list, confirm, cancel), refunds (create, retrieve, list;
  partial and full, `amount_too_large` past what is left), balance (the key check);
  billing (prices, Checkout sessions, the customer portal, subscriptions, invoices) in
  providers/sandbox/stripe_billing.py.
- **Test payment methods** decide a confirmation, as Stripe's do: `pm_card_visa`,
  `pm_card_mastercard`, `pm_card_amex` succeed; `pm_card_visa_chargeDeclinedInsufficientFunds`
  declines with `insufficient_funds`, `pm_card_chargeDeclined` with `generic_decline`,
  `pm_card_visa_chargeDeclinedExpiredCard` with `expired_card` (HTTP 402 `card_error`,
  the intent back to `requires_payment_method` with `last_payment_error`);
  `pm_card_threeDSecure2Required` and `pm_card_authenticationRequired` stop at
  `requires_action` with `next_action.redirect_to_url.url`, this sandbox's hosted
  authentication page (`GET /3d_secure_2/{intent}`; `POST` to it with
  `outcome=succeed|fail` is the customer answering the challenge).
- **Money**: integer minor units; at least 1 and at most 99999999 (`amount_too_small`,
  `amount_too_large`); three-decimal currencies (BHD, JOD, KWD, OMR, TND) in multiples of
  10, as Stripe requires (`invalid_amount`).
- **Idempotency** (`Idempotency-Key`, at most 255 characters): a request that ran (2xx or
  a decline) is saved for 24 hours per account and key; the same key with the same
  method, path and parameters answers the saved answer again with
  `Idempotent-Replayed: true`; with anything different, 400 `idempotency_error`.
  Validation failures are not saved (as Stripe does).
- **Errors** are Stripe's `{"error": {"type", "code", "message", "param"?,
  "decline_code"?, "doc_url"}}`; every answer carries `Request-Id`.
- **Webhooks** (`configure_webhooks(url, secret)`; the gateway points it at its own
  `/webhooks/stripe`): every change posts Stripe's event (`payment_intent.created`,
  `.requires_action`, `.processing`, `.succeeded`, `.payment_failed`, `.canceled`,
  `charge.refunded`, `refund.created`, `refund.updated`) as `{"id": "evt_…", "object":
  "event", "type", "created", "data": {"object": …}, …}`, signed as Stripe signs:
  `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret as UTF-8, "{t}.{body}")>`.
- `answer_delay` (Python only): an answer waits this long after its webhooks were sent,
  as Stripe's events often arrive before its API's answer.
- Faults, recording and stats come from providers/sandbox/base.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import Sandbox, bearer
from providers.sandbox.callbacks import CallbackRequest, RequestBuilder
from providers.sandbox.stripe_billing import StripeBilling

PROVIDER = "stripe"
API_VERSION = "2026-10-28.endive"
IDEMPOTENCY_TTL = 24 * 3600
MAX_KEY = 255
MAX_AMOUNT = 99_999_999
MAX_OBJECTS = 20_000
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf isk jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
CURRENCIES = frozenset(
    """usd eur gbp chf cad aud nzd sek nok dkk pln czk huf ron bgn jpy krw vnd clp isk ugx
    bhd jod kwd omr tnd mxn brl inr sgd hkd zar aed sar ils try thb myr php idr""".split()
)
SUCCEED = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_us"})
DECLINE = {
    "pm_card_visa_chargeDeclinedInsufficientFunds": (
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_visa_chargeDeclinedExpiredCard": ("expired_card", "Your card has expired."),
}
AUTHENTICATE = frozenset({"pm_card_threeDSecure2Required", "pm_card_authenticationRequired"})
DOCS = "https://docs.stripe.com/error-codes"
_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def parse_form(raw: bytes) -> dict[str, Any]:
    """Stripe's bracketed form encoding → nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        head, _, rest = key.partition("[")
        path = [head] + ([p.rstrip("]") for p in ("[" + rest).split("[")[1:]] if rest else [])
        node: Any = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if part == "":  # a[]=x: append
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"Invalid parameter: {key}")
    return _lists(root)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        items = {k: _lists(v) for k, v in value.items()}
        if items and all(k.isdigit() for k in items):
            return [items[k] for k in sorted(items, key=int)]
        return items
    return value


class StripeError(Exception):
    def __init__(
        self, status: int, kind: str, message: str, *, code: str | None = None,
        param: str | None = None, extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}


class Account:
    def __init__(self) -> None:
        self.objects: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # key -> (fingerprint of the request, status, body, first seen)
        self.idempotency: dict[str, tuple[str, int, dict[str, Any], float]] = {}
        self.charges_made = 0  # card charges attempted: what "one charge" is checked by

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        while len(self.objects) > MAX_OBJECTS:
            self.objects.popitem(last=False)
        return obj


class StripeSandbox(StripeBilling, Sandbox):
    provider = PROVIDER

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.webhook_secret: str | None = None
        # Seconds an answer waits after the work is done and its webhooks are on their
        # way (set from Python): Stripe's events often outrun its API's answer.
        self.answer_delay = 0.0
        super().__init__()

    def configure_webhooks(
        self, url: str | None, secret: str | None, *, delay: float | None = None
    ) -> None:
        """Post signed events to `url` (None: post nothing), signed with `secret`."""
        if url is not None and not secret:
            raise ValueError("Stripe webhooks need a whsec_ signing secret")
        self.webhook_secret = secret if url else None
        self.callbacks.configure(url, delay=delay)

    def reset_state(self) -> None:
        self.accounts.clear()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/balance", self._h(self.balance), methods=["GET"]),
            Route("/v1/customers", self._h(self.customers), methods=["GET", "POST"]),
            Route("/v1/customers/{id}", self._h(self.customer), methods=["GET"]),
            Route("/v1/payment_intents", self._h(self.intents), methods=["GET", "POST"]),
            Route("/v1/payment_intents/{id}", self._h(self.intent), methods=["GET"]),
            Route("/v1/payment_intents/{id}/confirm", self._h(self.confirm), methods=["POST"]),
            Route("/v1/payment_intents/{id}/cancel", self._h(self.cancel), methods=["POST"]),
            Route("/v1/refunds", self._h(self.refunds), methods=["GET", "POST"]),
            Route("/v1/refunds/{id}", self._h(self.refund), methods=["GET"]),
            Route("/3d_secure_2/{id}", self.authenticate, methods=["GET", "POST"]),
            *self.billing_routes(),
        ]

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        kind = "api_error" if status >= 500 else "invalid_request_error"
        if status == 429:
            code = code or "rate_limit"
            message = message or "Too many requests hit the API too quickly."
        error: dict[str, Any] = {"type": kind, "message": message or "An error occurred."}
        if code:
            error["code"] = code
            error["doc_url"] = f"{DOCS}#{code.replace('_', '-')}"
        return JSONResponse(
            {"error": error}, status, headers={"request-id": _id("req"), **(headers or {})}
        )

    def _fail(self, status: int, message: str, **extra: Any) -> StripeError:
        """Stripe's `invalid_request_error` (for the billing endpoints)."""
        return StripeError(status, "invalid_request_error", message, **extra)

    def _new_id(self, prefix: str) -> str:
        return _id(prefix)

    def _charge_method(self, account: Account, method: str | None, what: str) -> None:
        """Charge a test payment method for an invoice: nothing when it succeeds; the card
        error Stripe answers (402) when it declines; 400 for an unknown method."""
        if not method:
            raise self._fail(400, f"This {what} has no payment method to charge.",
                             code="invoice_no_payment_method_types")  # fmt: skip
        account.charges_made += 1
        if method in DECLINE:
            code, message = DECLINE[method]
            raise StripeError(402, "card_error", message, code="card_declined",
                              extra={"decline_code": code})  # fmt: skip
        if method not in SUCCEED:
            raise self._fail(400, f"No such PaymentMethod: '{method}'",
                             code="resource_missing", param="payment_method")  # fmt: skip

    def _refusal(self, err: StripeError) -> tuple[int, dict[str, Any]]:
        error: dict[str, Any] = {"type": err.kind, "message": err.message}
        if err.code:
            error["code"] = err.code
            error["doc_url"] = f"{DOCS}#{err.code.replace('_', '-')}"
        if err.param:
            error["param"] = err.param
        error.update(err.extra)
        return err.status, {"error": error}

    # Plumbing -------------------------------------------------------------------------

    def _account(self, request: Request) -> Account | StripeError:
        key = bearer(request)
        if not key:
            return StripeError(
                401, "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth.",
            )  # fmt: skip
        if "invalid" in key or not key.startswith(("sk_", "rk_", "sandbox-")):
            return StripeError(
                401, "invalid_request_error", f"Invalid API Key provided: {key[:7]}***"
            )  # fmt: skip
        slot = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.accounts.setdefault(slot, Account())

    def _h(self, fn: Any) -> Any:
        """Auth, the form body, idempotency and Stripe's error shape around a handler
        `fn(request, account, params) -> (status, body)`."""

        async def handle(request: Request) -> Response:
            account = self._account(request)
            if isinstance(account, StripeError):
                status, body = self._refusal(account)
                return self._json(body, status)
            raw = await request.body()
            try:
                if request.method == "GET":
                    params = parse_form(request.url.query.encode())
                else:
                    params = parse_form(raw)
            except ValueError as exc:
                return self._json(self._refusal(StripeError(400, "invalid_request_error",
                                                            str(exc)))[1], 400)  # fmt: skip
            key = request.headers.get("idempotency-key") if request.method == "POST" else None
            fingerprint = hashlib.sha256(
                json.dumps([request.method, request.url.path, params], sort_keys=True).encode()
            ).hexdigest()
            if key is not None:
                if not 1 <= len(key) <= MAX_KEY:
                    err = StripeError(
                        400, "invalid_request_error",
                        f"Invalid idempotency key: must be at most {MAX_KEY} characters.",
                        param="Idempotency-Key",
                    )  # fmt: skip
                    return self._json(self._refusal(err)[1], 400)
                self._expire(account)
                seen = account.idempotency.get(key)
                if seen is not None:
                    if seen[0] != fingerprint:
                        err = StripeError(
                            400, "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other "
                            f"than '{key}' if you meant to execute a different request.",
                        )  # fmt: skip
                        return self._json(self._refusal(err)[1], 400)
                    return self._json(seen[2], seen[1], replayed=True)
            try:
                status, body = fn(request, account, params)
            except StripeError as err:
                status, body = self._refusal(err)
                if key is not None and err.status == 402:  # the charge was attempted
                    account.idempotency[key] = (fingerprint, status, body, time.time())
                return self._json(body, status)
            if key is not None:
                account.idempotency[key] = (fingerprint, status, body, time.time())
            if self.answer_delay:
                await asyncio.sleep(self.answer_delay)
            return self._json(body, status)

        return handle

    def _json(self, body: dict[str, Any], status: int, *, replayed: bool = False) -> Response:
        headers = {"request-id": _id("req"), "stripe-version": API_VERSION}
        if replayed:
            headers["idempotent-replayed"] = "true"
        return JSONResponse(body, status, headers=headers)

    def _expire(self, account: Account) -> None:
        horizon = time.time() - IDEMPOTENCY_TTL
        for key in [k for k, v in account.idempotency.items() if v[3] < horizon]:
            del account.idempotency[key]

    def _get(self, account: Account, object_id: str, kind: str) -> dict[str, Any]:
        obj = account.objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise StripeError(
                404, "invalid_request_error", f"No such {kind}: '{object_id}'",
                code="resource_missing", param="id",
            )  # fmt: skip
        return obj

    def _expand(self, account: Account, obj: dict[str, Any], params: dict[str, Any]) -> Any:
        wanted = params.get("expand") or []
        if not isinstance(wanted, list):
            wanted = [wanted]
        out = dict(obj)
        for name in wanted:
            value = out.get(name)
            if isinstance(value, str) and value in account.objects:
                out[name] = account.objects[value]
        return out

    def _list(
        self, account: Account, request: Request, kind: str, params: dict[str, Any], **where: Any
    ) -> tuple[int, dict[str, Any]]:
        try:
            limit = int(params.get("limit", 10))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            raise StripeError(
                400, "invalid_request_error",
                "Invalid integer: limit must be between 1 and 100.", param="limit",
            )  # fmt: skip
        items = [
            o for o in reversed(account.objects.values())
            if o["object"] == kind and all(o.get(k) == v for k, v in where.items() if v)
        ]  # fmt: skip
        after, before = params.get("starting_after"), params.get("ending_before")
        if after:
            ids = [o["id"] for o in items]
            if after not in ids:
                raise StripeError(404, "invalid_request_error", f"No such object: '{after}'",
                                  code="resource_missing", param="starting_after")  # fmt: skip
            items = items[ids.index(after) + 1 :]
            page, more = items[:limit], len(items) > limit
        elif before:
            ids = [o["id"] for o in items]
            if before not in ids:
                raise StripeError(404, "invalid_request_error", f"No such object: '{before}'",
                                  code="resource_missing", param="ending_before")  # fmt: skip
            earlier = items[: ids.index(before)]
            page, more = earlier[-limit:], len(earlier) > limit
        else:
            page, more = items[:limit], len(items) > limit
        data = [self._expand(account, o, params) for o in page]
        return 200, {"object": "list", "data": data, "has_more": more, "url": request.url.path}

    # Endpoints ----------------------------------------------------------------------------

    def balance(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        return 200, {
            "object": "balance", "livemode": False,
            "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
            "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
        }  # fmt: skip

    def customers(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        if request.method == "GET":
            return self._list(account, request, "customer", params, email=params.get("email"))
        customer = account.put({
            "id": _id("cus"), "object": "customer", "created": int(time.time()),
            "livemode": False, "email": _text(params, "email", 512),
            "name": _text(params, "name", 256), "description": _text(params, "description", 350),
            "metadata": _metadata(params), "balance": 0, "currency": None,
        })  # fmt: skip
        return 200, customer

    def customer(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        obj = self._get(account, request.path_params["id"], "customer")
        return 200, self._expand(account, obj, params)

    def intents(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        if request.method == "GET":
            return self._list(
                account, request, "payment_intent", params, customer=params.get("customer")
            )
        amount = _amount(params)
        currency = str(params.get("currency") or "").lower()
        if not currency:
            raise StripeError(400, "invalid_request_error", "Missing required param: currency.",
                              code="parameter_missing", param="currency")  # fmt: skip
        if currency not in CURRENCIES:
            raise StripeError(400, "invalid_request_error", f"Invalid currency: {currency}.",
                              code="parameter_invalid_string", param="currency")  # fmt: skip
        if currency in THREE_DECIMAL and amount % 10:
            raise StripeError(
                400, "invalid_request_error",
                f"Amounts in {currency.upper()} must be multiples of 10 (the last digit 0).",
                code="invalid_amount", param="amount",
            )  # fmt: skip
        customer = params.get("customer")
        if customer:
            self._get(account, str(customer), "customer")
        intent_id = _id("pi")
        intent = account.put({
            "id": intent_id, "object": "payment_intent", "created": int(time.time()),
            "livemode": False, "amount": amount, "currency": currency,
            "amount_capturable": 0, "amount_received": 0, "customer": customer or None,
            "description": _text(params, "description", 1000),
            "metadata": _metadata(params), "status": "requires_payment_method",
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
            "payment_method": None, "payment_method_types": params.get(
                "payment_method_types") or ["card"],
            "next_action": None, "last_payment_error": None, "latest_charge": None,
            "canceled_at": None, "cancellation_reason": None, "capture_method": "automatic",
            "confirmation_method": "automatic",
        })  # fmt: skip
        self._event(account, "payment_intent.created", intent)
        if params.get("payment_method"):
            intent["payment_method"] = params["payment_method"]
            intent["status"] = "requires_confirmation"
        if str(params.get("confirm")).lower() == "true":
            return self._confirm(request, account, intent, params)
        return 200, self._expand(account, intent, params)

    def intent(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        obj = self._get(account, request.path_params["id"], "payment_intent")
        return 200, self._expand(account, obj, params)

    def confirm(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        intent = self._get(account, request.path_params["id"], "payment_intent")
        return self._confirm(request, account, intent, params)

    def _confirm(
        self, request: Request, account: Account, intent: dict[str, Any], params: dict[str, Any]
    ) -> Any:
        if intent["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise StripeError(
                400, "invalid_request_error",
                "This PaymentIntent's status is " + intent["status"] + ", but it must be "
                "requires_payment_method or requires_confirmation to be confirmed.",
                code="payment_intent_unexpected_state",
                extra={"payment_intent": intent},
            )  # fmt: skip
        method = params.get("payment_method") or intent.get("payment_method")
        if not method:
            raise StripeError(
                400, "invalid_request_error",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state", param="payment_method",
            )  # fmt: skip
        method = str(method)
        if method not in SUCCEED and method not in DECLINE and method not in AUTHENTICATE:
            raise StripeError(
                400, "invalid_request_error", f"No such PaymentMethod: '{method}'",
                code="resource_missing", param="payment_method",
            )  # fmt: skip
        intent["payment_method"] = method
        intent["last_payment_error"] = None
        if method in AUTHENTICATE:
            # The hosted page, under wherever this sandbox is mounted.
            page = request.url.replace(
                path=f"{request.scope.get('root_path', '')}/3d_secure_2/{intent['id']}",
                query="",
            )
            intent["status"] = "requires_action"
            intent["next_action"] = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": str(page),
                    "return_url": params.get("return_url"),
                },
            }
            self._event(account, "payment_intent.requires_action", intent)
            return 200, self._expand(account, intent, params)
        account.charges_made += 1
        if method in DECLINE:
            code, message = DECLINE[method]
            charge = self._charge(account, intent, succeeded=False, decline=code)
            self._decline(account, intent, charge, "card_declined", code, message)
            raise StripeError(
                402, "card_error", message, code="card_declined",
                extra={"decline_code": code, "charge": charge["id"],
                       "payment_intent": intent},
            )  # fmt: skip
        self._succeed(account, intent)
        return 200, self._expand(account, intent, params)

    def _charge(
        self, account: Account, intent: dict[str, Any], *, succeeded: bool,
        decline: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        charge = account.put({
            "id": _id("ch"), "object": "charge", "created": int(time.time()),
            "livemode": False, "amount": intent["amount"], "currency": intent["currency"],
            "amount_refunded": 0, "refunded": False, "paid": succeeded,
            "status": "succeeded" if succeeded else "failed",
            "payment_intent": intent["id"], "customer": intent["customer"],
            "failure_code": None if succeeded else "card_declined",
            "outcome": {"type": "authorized" if succeeded else "issuer_declined",
                        "reason": decline},
            "metadata": dict(intent["metadata"]),
        })  # fmt: skip
        intent["latest_charge"] = charge["id"]
        return charge

    def _succeed(self, account: Account, intent: dict[str, Any]) -> None:
        self._charge(account, intent, succeeded=True)
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
        intent["next_action"] = None
        self._event(account, "payment_intent.succeeded", intent)

    def _decline(
        self, account: Account, intent: dict[str, Any], charge: dict[str, Any] | None,
        code: str, decline: str | None, message: str,
    ) -> None:  # fmt: skip
        intent["status"] = "requires_payment_method"
        intent["next_action"] = None
        error: dict[str, Any] = {"type": "card_error", "code": code, "message": message,
                                 "payment_method": {"id": intent["payment_method"]}}  # fmt: skip
        if decline:
            error["decline_code"] = decline
        if charge is not None:
            error["charge"] = charge["id"]
        intent["last_payment_error"] = error
        self._event(account, "payment_intent.payment_failed", intent)

    def cancel(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        intent = self._get(account, request.path_params["id"], "payment_intent")
        if intent["status"] in ("succeeded", "canceled", "processing"):
            raise StripeError(
                400, "invalid_request_error",
                f"You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
                "may be canceled: requires_payment_method, requires_capture, "
                "requires_confirmation, requires_action.",
                code="payment_intent_unexpected_state", extra={"payment_intent": intent},
            )  # fmt: skip
        intent["status"] = "canceled"
        intent["next_action"] = None
        intent["canceled_at"] = int(time.time())
        intent["cancellation_reason"] = params.get("cancellation_reason") or "requested_by_customer"
        self._event(account, "payment_intent.canceled", intent)
        return 200, self._expand(account, intent, params)

    def refunds(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        if request.method == "GET":
            return self._list(
                account, request, "refund", params, payment_intent=params.get("payment_intent")
            )
        intent_id = params.get("payment_intent")
        if not intent_id:
            raise StripeError(400, "invalid_request_error",
                              "One of the following params should be provided for this "
                              "request: payment_intent or charge.",
                              code="parameter_missing", param="payment_intent")  # fmt: skip
        intent = self._get(account, str(intent_id), "payment_intent")
        charge = account.objects.get(intent.get("latest_charge") or "")
        if intent["status"] != "succeeded" or charge is None:
            raise StripeError(
                400, "invalid_request_error",
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to "
                "refund.", code="charge_not_refundable", param="payment_intent",
            )  # fmt: skip
        left = charge["amount"] - charge["amount_refunded"]
        if left <= 0:
            raise StripeError(400, "invalid_request_error",
                              f"Charge {charge['id']} has already been refunded.",
                              code="charge_already_refunded")  # fmt: skip
        amount = _amount(params) if "amount" in params else left
        if amount > left:
            raise StripeError(
                400, "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code="amount_too_large", param="amount",
            )  # fmt: skip
        refund = account.put({
            "id": _id("re"), "object": "refund", "created": int(time.time()),
            "amount": amount, "currency": intent["currency"], "charge": charge["id"],
            "payment_intent": intent["id"], "status": "succeeded", "reason": params.get(
                "reason"), "failure_reason": None, "metadata": _metadata(params),
        })  # fmt: skip
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        self._event(account, "refund.created", refund)
        self._event(account, "charge.refunded", charge)
        return 200, self._expand(account, refund, params)

    def refund(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        obj = self._get(account, request.path_params["id"], "refund")
        return 200, self._expand(account, obj, params)

    async def authenticate(self, request: Request) -> Response:
        """Stripe's hosted 3-D Secure page for an intent; POST `outcome=succeed|fail`."""
        intent_id = request.path_params["id"]
        found = [(a, a.objects.get(intent_id)) for a in self.accounts.values()]
        account, intent = next(((a, o) for a, o in found if o is not None), (None, None))
        if account is None or intent is None or intent.get("object") != "payment_intent":
            return HTMLResponse("<h1>Unknown payment</h1>", 404)
        if request.method == "GET":
            return HTMLResponse(
                f"<h1>3-D Secure test</h1><form method=post><button name=outcome value=succeed>"
                f"Complete</button><button name=outcome value=fail>Fail</button></form>"
                f"<p>{intent_id}</p>"
            )
        if intent["status"] != "requires_action":
            return JSONResponse({"status": intent["status"]}, 409)
        form = parse_form(await request.body())
        outcome = str(form.get("outcome") or request.query_params.get("outcome") or "")
        account.charges_made += 1
        if outcome == "succeed":
            self._succeed(account, intent)
        else:
            self._decline(
                account, intent, None, "payment_intent_authentication_failure", None,
                "The provided PaymentMethod has failed authentication.",
            )  # fmt: skip
        return JSONResponse({"status": intent["status"]})

    # Webhooks ------------------------------------------------------------------------------

    def _event(self, account: Account, kind: str, obj: dict[str, Any]) -> None:
        secret = self.webhook_secret
        if secret is None or not self.callbacks.enabled:
            return
        event = {
            "id": _id("evt"), "object": "event", "api_version": API_VERSION,
            "created": int(time.time()), "type": kind, "livemode": False,
            "pending_webhooks": 1, "request": {"id": _id("req"), "idempotency_key": None},
            "data": {"object": json.loads(json.dumps(obj))},  # the state at this moment
        }  # fmt: skip
        self.callbacks.schedule([signed_event(secret, event)])


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`Stripe-Signature` for `body` at `timestamp` (the whole `whsec_…` string is the key)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def signed_event(secret: str, event: dict[str, Any]) -> RequestBuilder:
    raw = json.dumps(event, separators=(",", ":")).encode()

    def build() -> CallbackRequest:
        return CallbackRequest(
            raw,
            {
                "content-type": "application/json; charset=utf-8",
                "user-agent": _USER_AGENT,
                "stripe-signature": signature(secret, int(time.time()), raw),
            },
        )

    return build


def _amount(params: dict[str, Any]) -> int:
    raw = params.get("amount")
    if raw is None or raw == "":
        raise StripeError(400, "invalid_request_error", "Missing required param: amount.",
                          code="parameter_missing", param="amount")  # fmt: skip
    try:
        amount = int(str(raw))
    except ValueError:
        raise StripeError(400, "invalid_request_error", "Invalid integer: " + str(raw)[:40],
                          code="parameter_invalid_integer", param="amount") from None  # fmt: skip
    if amount < 1:
        raise StripeError(400, "invalid_request_error",
                          "Amount must be at least 1 in the currency's smallest unit.",
                          code="amount_too_small", param="amount")  # fmt: skip
    if amount > MAX_AMOUNT:
        raise StripeError(400, "invalid_request_error",
                          f"Amount must be no more than {MAX_AMOUNT}.",
                          code="amount_too_large", param="amount")  # fmt: skip
    return amount


def _text(params: dict[str, Any], name: str, limit: int) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise StripeError(400, "invalid_request_error",
                          f"Invalid string: {name} must be at most {limit} characters.",
                          code="parameter_invalid_string", param=name)  # fmt: skip
    return value


def _metadata(params: dict[str, Any]) -> dict[str, str]:
    raw = params.get("metadata") or {}
    if raw == "":
        return {}
    if not isinstance(raw, dict) or len(raw) > 50:
        raise StripeError(400, "invalid_request_error",
                          "Invalid metadata: at most 50 keys.", param="metadata")  # fmt: skip
    for key, value in raw.items():
        if len(key) > 40 or not isinstance(value, str) or len(value) > 500:
            raise StripeError(400, "invalid_request_error",
                              "Invalid metadata: keys up to 40 and values up to 500 characters.",
                              param=f"metadata[{key[:40]}]")  # fmt: skip
    return dict(raw)


def create_app() -> StripeSandbox:
    return StripeSandbox()
