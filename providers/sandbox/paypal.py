"""PayPal emulator: the REST API's OAuth token, Orders v2, captures and refunds, the
payer's approval page, and signed webhooks, as https://developer.paypal.com/api/rest/
describes them.

- `POST /v1/oauth2/token` (HTTP Basic client id and secret, `grant_type=client_credentials`)
  → a bearer token good for `token_lifetime` seconds (PayPal: about nine hours). An id or
  secret containing `invalid` is `401 invalid_client`; an unknown or expired bearer token
  is `401 AUTHENTICATION_FAILURE`. `token_requests` counts the tokens issued.
- `POST /v2/checkout/orders` → `PAYER_ACTION_REQUIRED` with a `payer-action` link to
  `/checkoutnow?token=<id>`, the payer's page: `POST /checkoutnow` with `token` and
  `action=approve` (→ APPROVED, `CHECKOUT.ORDER.APPROVED`), `decline` (approved with a
  funding source that the capture will refuse: `422 INSTRUMENT_DECLINED`), `pending`
  (approved; its capture stays PENDING for review, then completes `pending_seconds` later)
  or `cancel`; it redirects to the order's return or cancel URL as PayPal does.
- `GET /v2/checkout/orders/{id}`, `POST /v2/checkout/orders/{id}/capture` (not approved:
  `422 ORDER_NOT_APPROVED`; twice: `422 ORDER_ALREADY_CAPTURED`) → the capture, and
  `PAYMENT.CAPTURE.COMPLETED` / `.PENDING` / `.DENIED`.
- `POST /v2/payments/captures/{id}/refund` (an amount, or what is left; more than is left:
  `422 REFUND_AMOUNT_EXCEEDED`) → a COMPLETED refund and `PAYMENT.CAPTURE.REFUNDED`;
  `GET /v2/payments/refunds/{id}`, `GET /v2/payments/captures/{id}`.
- `PayPal-Request-Id` on a POST: the same id answers the first answer again (PayPal keeps
  them for at least 72 hours); `captures_made` and `refunds_made` count the money moves.
- Webhooks: each event is posted to the configured receiver with PayPal's headers, signed
  RSA-SHA256 over `"{transmission id}|{time}|{webhook id}|{crc32(body)}"` with this
  emulator's key, whose certificate it serves at `/v1/notifications/certs/<name>` (the
  `PAYPAL-CERT-URL`). The key is made once per process.

Amounts follow PayPal's rules: a decimal string with the currency's places (none for JPY,
HUF and TWD), at most 10 digits before the point; currencies outside PayPal's list are
`422 CURRENCY_NOT_SUPPORTED`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import json
import re
import secrets
import time
import uuid
from collections import OrderedDict
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kit.signing import paypal_message
from providers.sandbox.base import Sandbox, bearer, mounted_url
from providers.sandbox.callbacks import CallbackRequest, RequestBuilder

PROVIDER = "paypal"
MAX_OBJECTS = 20_000
IDEMPOTENCY_TTL = 72 * 3600
CERT_NAME = "CERT-360caa42-fca2a594-sandbox0"
# PayPal's currencies (REST API reference), with their decimal places.
CURRENCIES = {
    "AUD": 2,
    "BRL": 2,
    "CAD": 2,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "HKD": 2,
    "HUF": 0,
    "ILS": 2,
    "JPY": 0,
    "MYR": 2,
    "MXN": 2,
    "TWD": 0,
    "NZD": 2,
    "NOK": 2,
    "PHP": 2,
    "PLN": 2,
    "GBP": 2,
    "SGD": 2,
    "SEK": 2,
    "CHF": 2,
    "THB": 2,
    "USD": 2,
}
# Subscription plans every REST app of the sandbox knows (name, price, currency a month).
SEEDED_PLANS = {"P-SWITCHBOARD-PRO": ("Pro", "10.00", "EUR")}
_AMOUNT = re.compile(r"^\d{1,10}(\.\d{1,2})?$")


@functools.cache
def signing_identity() -> tuple[rsa.RSAPrivateKey, bytes]:
    """The process's webhook signing key and its self-signed certificate (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.sandbox")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _id(length: int = 17) -> str:
    alphabet = "ABCDEFGHJKLMNPRSTUVWXY0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _now(*, days: int = 0) -> str:
    at = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class PayPalError(Exception):
    def __init__(
        self,
        status: int,
        name: str,
        message: str,
        issue: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.name, self.message = status, name, message
        self.issue, self.description = issue, description


def _unprocessable(issue: str, description: str) -> PayPalError:
    return PayPalError(
        422,
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed "
        "business validation.",
        issue,
        description,
    )


def _invalid(issue: str, description: str) -> PayPalError:
    return PayPalError(
        400,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        issue,
        description,
    )


class App:
    """One REST app (client id): its objects and its request ids."""

    def __init__(self) -> None:
        self.objects: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.request_ids: dict[str, tuple[float, int, dict[str, Any]]] = {}

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        while len(self.objects) > MAX_OBJECTS:
            self.objects.popitem(last=False)
        return obj


class PayPalSandbox(Sandbox):
    provider = PROVIDER

    def __init__(self) -> None:
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expiry)
        self.token_lifetime = 32400
        self.token_requests = 0
        self.captures_made = 0
        self.refunds_made = 0
        self.pending_seconds = 0.5
        self.webhook_id: str | None = None
        self.public_base = ""  # this emulator's URL as its callers reach it (from requests)
        super().__init__()

    def configure_webhooks(self, url: str | None, webhook_id: str | None) -> None:
        """Post signed events to `url` for PayPal webhook `webhook_id` (None: post nothing)."""
        if url is not None and not webhook_id:
            raise ValueError("PayPal webhooks are signed for a webhook id")
        self.webhook_id = webhook_id if url else None
        self.callbacks.configure(url)

    def reset_state(self) -> None:
        self.apps.clear()
        self.tokens.clear()
        self.token_requests = self.captures_made = self.refunds_made = 0

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/oauth2/token", self.token, methods=["POST"]),
            Route("/v2/checkout/orders", self._h(self.create_order), methods=["POST"]),
            Route("/v2/checkout/orders/{id}", self._h(self.get_order), methods=["GET"]),
            Route("/v2/checkout/orders/{id}/capture", self._h(self.capture), methods=["POST"]),
            Route("/v2/payments/captures/{id}", self._h(self.get_capture), methods=["GET"]),
            Route("/v2/payments/captures/{id}/refund", self._h(self.refund), methods=["POST"]),
            Route("/v2/payments/refunds/{id}", self._h(self.get_refund), methods=["GET"]),
            Route("/v1/notifications/certs/{name}", self.certificate, methods=["GET"]),
            Route("/checkoutnow", self.checkout, methods=["GET", "POST"]),
            Route("/v1/billing/plans", self._h(self.create_plan), methods=["POST"]),
            Route("/v1/billing/subscriptions", self._h(self.create_subscription), methods=["POST"]),
            Route(
                "/v1/billing/subscriptions/{id}", self._h(self.get_subscription), methods=["GET"]
            ),
            Route(
                "/v1/billing/subscriptions/{id}/cancel",
                self._h(self.cancel_subscription),
                methods=["POST"],
            ),
            Route(
                "/webapps/billing/subscriptions", self.approve_subscription, methods=["GET", "POST"]
            ),
        ]

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        names = {
            401: "AUTHENTICATION_FAILURE",
            403: "NOT_AUTHORIZED",
            404: "RESOURCE_NOT_FOUND",
            422: "UNPROCESSABLE_ENTITY",
            429: "RATE_LIMIT_REACHED",
        }
        name = code or names.get(status) or ("INTERNAL_SERVER_ERROR" if status >= 500 else "ERROR")
        body = {
            "name": name,
            "message": message or ("Too many requests." if status == 429 else "An error occurred."),
            "debug_id": secrets.token_hex(7),
            "links": [],
        }
        return JSONResponse(
            body, status, headers={"paypal-debug-id": str(body["debug_id"]), **(headers or {})}
        )

    def _refusal(self, err: PayPalError) -> Response:
        body: dict[str, Any] = {
            "name": err.name,
            "message": err.message,
            "debug_id": secrets.token_hex(7),
            "links": [],
        }
        if err.issue:
            body["details"] = [{"issue": err.issue, "description": err.description or ""}]
        return JSONResponse(body, err.status, headers={"paypal-debug-id": body["debug_id"]})

    # Auth ---------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            client_id = secret = ""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if (
            scheme.lower() != "basic"
            or not client_id
            or not secret
            or "invalid" in value + (client_id + secret)
        ):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                401,
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Grant Type is NULL or not supported",
                },
                400,
            )
        self.token_requests += 1
        token = "A21AA" + secrets.token_urlsafe(32)
        self.tokens[token] = (client_id, time.time() + self.token_lifetime)
        self.apps.setdefault(client_id, App())
        return JSONResponse(
            {
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": f"APP-{client_id[:12]}",
                "expires_in": self.token_lifetime,
                "nonce": f"{_now()}{secrets.token_hex(8)}",
            }
        )

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (a test of renewal)."""
        for token, (client, _) in list(self.tokens.items()):
            self.tokens[token] = (client, 0.0)

    def _app(self, request: Request) -> App | None:
        token = bearer(request)
        found = self.tokens.get(token or "")
        if found is None or found[1] < time.time():
            return None
        return self.apps.setdefault(found[0], App())

    def _h(self, fn: Any) -> Any:
        """Auth, `PayPal-Request-Id` replay and PayPal's error bodies around a handler
        `fn(request, app, body) -> (status, body)`."""

        async def handle(request: Request) -> Response:
            # Where the certificate is served, as the callers reach this emulator.
            self.public_base = mounted_url(request)
            app = self._app(request)
            if app is None:
                return self.error_response(
                    401,
                    message="Authentication failed due to invalid authentication "
                    "credentials or a missing Authorization header.",
                )
            raw = await request.body()
            body: Any = None
            if request.method == "POST" and raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._refusal(
                        _invalid("MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
                    )
            request_id = request.headers.get("paypal-request-id")
            key = f"{request.url.path}\x00{request_id}" if request_id else None
            if key and request.method == "POST":
                horizon = time.time() - IDEMPOTENCY_TTL
                for old in [k for k, v in app.request_ids.items() if v[0] < horizon]:
                    del app.request_ids[old]
                if key in app.request_ids:
                    _, status, answer = app.request_ids[key]
                    return _answer(answer, status)
            try:
                status, answer = fn(request, app, body if isinstance(body, dict) else {})
            except PayPalError as err:
                return self._refusal(err)
            if key and request.method == "POST":
                app.request_ids[key] = (time.time(), status, answer)
            return _answer(answer, status)

        return handle

    def _get(self, app: App, object_id: str, kind: str) -> dict[str, Any]:
        obj = app.objects.get(object_id)
        if obj is None or obj.get("_kind") != kind:
            raise PayPalError(
                404,
                "RESOURCE_NOT_FOUND",
                "The specified resource does not exist.",
                "INVALID_RESOURCE_ID",
                "Specified resource ID does not exist. Please check the resource ID and try again.",
            )
        return obj

    # Orders -------------------------------------------------------------------------------

    def create_order(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        if body.get("intent") not in ("CAPTURE", "AUTHORIZE"):
            raise _invalid("INVALID_PARAMETER_VALUE", "intent must be CAPTURE or AUTHORIZE.")
        units = body.get("purchase_units")
        if not isinstance(units, list) or len(units) != 1 or not isinstance(units[0], dict):
            raise _invalid("INVALID_PARAMETER_VALUE", "One purchase unit is supported here.")
        unit = units[0]
        amount = _mapping(unit.get("amount"))
        currency, value = str(amount.get("currency_code") or ""), str(amount.get("value") or "")
        _check_amount(currency, value)
        context = ((body.get("payment_source") or {}).get("paypal") or {}).get(
            "experience_context"
        ) or {}
        order_id = _id()
        base = mounted_url(request)
        order = app.put(
            {
                "_kind": "order",
                "id": order_id,
                "intent": body["intent"],
                "status": "PAYER_ACTION_REQUIRED",
                "create_time": _now(),
                "payment_source": {"paypal": {}},
                "purchase_units": [
                    {
                        "reference_id": str(unit.get("reference_id") or "default")[:256],
                        "custom_id": unit.get("custom_id"),
                        "description": unit.get("description"),
                        "amount": {"currency_code": currency, "value": value},
                    }
                ],
                "_return_url": context.get("return_url"),
                "_cancel_url": context.get("cancel_url"),
                "_funding": None,
                "links": [
                    {
                        "href": f"{base}/v2/checkout/orders/{order_id}",
                        "rel": "self",
                        "method": "GET",
                    },
                    {
                        "href": f"{base}/checkoutnow?token={order_id}",
                        "rel": "payer-action",
                        "method": "GET",
                    },
                ],
            }
        )
        return 200, _public(order)

    def get_order(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        return 200, _public(self._get(app, request.path_params["id"], "order"))

    def capture(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        order = self._get(app, request.path_params["id"], "order")
        if order["status"] == "COMPLETED":
            raise _unprocessable("ORDER_ALREADY_CAPTURED", "Order already captured.")
        if order["status"] != "APPROVED":
            raise _unprocessable(
                "ORDER_NOT_APPROVED", "Payer has not yet approved the Order for payment."
            )
        self.captures_made += 1
        unit = order["purchase_units"][0]
        if order["_funding"] == "decline":
            self._event(
                "PAYMENT.CAPTURE.DENIED",
                "capture",
                {
                    "id": _id(),
                    "status": "DECLINED",
                    "amount": unit["amount"],
                    "custom_id": unit.get("custom_id"),
                    "create_time": _now(),
                    "supplementary_data": {"related_ids": {"order_id": order["id"]}},
                },
            )
            raise _unprocessable(
                "INSTRUMENT_DECLINED",
                "The instrument presented was either declined by the "
                "processor or bank, or it can't be used for this payment.",
            )
        pending = order["_funding"] == "pending"
        capture = app.put(
            {
                "_kind": "capture",
                "id": (capture_id := _id()),
                "status": "PENDING" if pending else "COMPLETED",
                "amount": dict(unit["amount"]),
                "custom_id": unit.get("custom_id"),
                "final_capture": True,
                "create_time": _now(),
                "update_time": _now(),
                "_refunded": Decimal(0),
                "supplementary_data": {"related_ids": {"order_id": order["id"]}},
                "links": [
                    {
                        "href": f"{mounted_url(request)}/v2/payments/captures/{capture_id}",
                        "rel": "self",
                        "method": "GET",
                    }
                ],
            }
        )
        if pending:
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        unit["payments"] = {"captures": [_public(capture)]}
        order["status"] = "COMPLETED"
        order["payer"] = {"email_address": "payer@example.com", "payer_id": _id(13)}
        self._event(
            "PAYMENT.CAPTURE.PENDING" if pending else "PAYMENT.CAPTURE.COMPLETED",
            "capture",
            _public(capture),
        )
        if pending:
            asyncio.get_running_loop().call_later(
                self.pending_seconds, self._complete, app, capture["id"]
            )
        return 201, _public(order)

    def _complete(self, app: App, capture_id: str) -> None:
        capture = app.objects.get(capture_id)
        if capture is None or capture["status"] != "PENDING":
            return
        capture["status"] = "COMPLETED"
        capture.pop("status_details", None)
        capture["update_time"] = _now()
        self._event("PAYMENT.CAPTURE.COMPLETED", "capture", _public(capture))

    def get_capture(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        return 200, _public(self._get(app, request.path_params["id"], "capture"))

    # Refunds ------------------------------------------------------------------------------

    def refund(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        capture = self._get(app, request.path_params["id"], "capture")
        if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            raise _unprocessable(
                "CAPTURE_FULLY_REFUNDED"
                if capture["status"] == "REFUNDED"
                else "REFUND_NOT_ALLOWED",
                "The capture cannot be refunded.",
            )
        currency = capture["amount"]["currency_code"]
        total = Decimal(capture["amount"]["value"])
        left = total - capture["_refunded"]
        wanted = body.get("amount")
        if wanted is not None:
            if not isinstance(wanted, dict) or wanted.get("currency_code") != currency:
                raise _unprocessable(
                    "REFUND_CURRENCY_MISMATCH",
                    "Refund must be in the same currency as the capture.",
                )
            _check_amount(currency, str(wanted.get("value") or ""))
            amount = Decimal(str(wanted["value"]))
        else:
            amount = left
        if amount <= 0 or amount > left:
            raise _unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the "
                "capture amount that has not yet been refunded.",
            )
        self.refunds_made += 1
        capture["_refunded"] += amount
        capture["status"] = "REFUNDED" if capture["_refunded"] >= total else "PARTIALLY_REFUNDED"
        base = mounted_url(request)
        places = CURRENCIES[currency]
        refund = app.put(
            {
                "_kind": "refund",
                "id": _id(),
                "status": "COMPLETED",
                "amount": {"currency_code": currency, "value": f"{amount:.{places}f}"},
                "custom_id": body.get("custom_id") or capture.get("custom_id"),
                "note_to_payer": body.get("note_to_payer"),
                "create_time": _now(),
                "update_time": _now(),
                "links": [
                    {"href": f"{base}/v2/payments/refunds/{{id}}", "rel": "self", "method": "GET"},
                    {
                        "href": f"{base}/v2/payments/captures/{capture['id']}",
                        "rel": "up",
                        "method": "GET",
                    },
                ],
            }
        )
        refund["links"][0]["href"] = refund["links"][0]["href"].replace("{id}", refund["id"])
        self._event("PAYMENT.CAPTURE.REFUNDED", "refund", _public(refund))
        return 201, _public(refund)

    def get_refund(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        return 200, _public(self._get(app, request.path_params["id"], "refund"))

    # Subscriptions -------------------------------------------------------------------------

    def _plan(self, app: App, plan_id: str) -> dict[str, Any]:
        plan = app.objects.get(plan_id)
        if plan is None and plan_id in SEEDED_PLANS:
            name, value, currency = SEEDED_PLANS[plan_id]
            plan = app.put(
                {
                    "_kind": "plan",
                    "id": plan_id,
                    "name": name,
                    "status": "ACTIVE",
                    "billing_cycles": [
                        {
                            "frequency": {"interval_unit": "MONTH"},
                            "pricing_scheme": {
                                "fixed_price": {"value": value, "currency_code": currency}
                            },
                        }
                    ],
                }
            )
        if plan is None or plan.get("_kind") != "plan":
            raise _unprocessable("INVALID_RESOURCE_ID", "The specified plan does not exist.")
        return plan

    def create_plan(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        cycles = body.get("billing_cycles")
        try:
            price = cycles[0]["pricing_scheme"]["fixed_price"]  # type: ignore[index]
            _check_amount(str(price["currency_code"]), str(price["value"]))
        except (TypeError, KeyError, IndexError):
            raise _invalid("MISSING_REQUIRED_PARAMETER", "billing_cycles is required.") from None
        plan = app.put(
            {
                "_kind": "plan",
                "id": f"P-{_id(24)}",
                "status": "ACTIVE",
                "name": str(body.get("name") or "Plan")[:127],
                "billing_cycles": cycles,
            }
        )
        return 201, _public(plan)

    def create_subscription(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        plan = self._plan(app, str(body.get("plan_id") or ""))
        context = (
            body.get("application_context")
            if isinstance(body.get("application_context"), dict)
            else {}
        )
        sub_id, token = f"I-{_id(12)}", f"BA-{_id(17)}"
        base = mounted_url(request)
        sub = app.put(
            {
                "_kind": "subscription",
                "id": sub_id,
                "plan_id": plan["id"],
                "status": "APPROVAL_PENDING",
                "custom_id": body.get("custom_id"),
                "create_time": _now(),
                "status_update_time": _now(),
                "_token": token,
                "_return_url": (context or {}).get("return_url"),
                "_cancel_url": (context or {}).get("cancel_url"),
                "links": [
                    {
                        "href": f"{base}/webapps/billing/subscriptions?ba_token={token}",
                        "rel": "approve",
                        "method": "GET",
                    },
                    {
                        "href": f"{base}/v1/billing/subscriptions/{sub_id}",
                        "rel": "self",
                        "method": "GET",
                    },
                ],
            }
        )
        return 201, _public(sub)

    def get_subscription(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        return 200, _public(self._get(app, request.path_params["id"], "subscription"))

    def cancel_subscription(self, request: Request, app: App, body: dict[str, Any]) -> Any:
        sub = self._get(app, request.path_params["id"], "subscription")
        if sub["status"] not in ("ACTIVE", "SUSPENDED", "APPROVAL_PENDING"):
            raise _unprocessable(
                "SUBSCRIPTION_STATUS_INVALID",
                "Invalid subscription status for cancel action; subscription "
                "status should be active or suspended.",
            )
        sub.update(status="CANCELLED", status_update_time=_now())
        self._event("BILLING.SUBSCRIPTION.CANCELLED", "subscription", _public(sub))
        return 204, {}

    async def approve_subscription(self, request: Request) -> Response:
        """The payer's page for a subscription: POST `ba_token` and `action` (approve,
        cancel)."""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        token = form.get("ba_token") or request.query_params.get("ba_token") or ""
        found = next(
            (
                o
                for app in self.apps.values()
                for o in app.objects.values()
                if o.get("_kind") == "subscription" and o.get("_token") == token
            ),
            None,
        )
        if found is None:
            return HTMLResponse("<h1>This subscription is not available</h1>", 404)
        if request.method == "GET":
            return HTMLResponse("<h1>PayPal sandbox: approve the subscription</h1>")
        if found["status"] != "APPROVAL_PENDING":
            return JSONResponse({"status": found["status"]}, 409)
        if form.get("action") == "cancel":
            target = found.get("_cancel_url")
        else:
            found.update(
                status="ACTIVE",
                status_update_time=_now(),
                billing_info={"next_billing_time": _now(days=30)},
            )
            self._event("BILLING.SUBSCRIPTION.ACTIVATED", "subscription", _public(found))
            target = found.get("_return_url")
        if target:
            joiner = "&" if "?" in target else "?"
            query = urlencode({"subscription_id": found["id"], "ba_token": token})
            return RedirectResponse(f"{target}{joiner}{query}", 303)
        return JSONResponse({"status": found["status"]})

    # The payer ----------------------------------------------------------------------------

    def _order_anywhere(self, order_id: str) -> tuple[App, dict[str, Any]] | None:
        for app in self.apps.values():
            obj = app.objects.get(order_id)
            if obj is not None and obj.get("_kind") == "order":
                return app, obj
        return None

    async def checkout(self, request: Request) -> Response:
        """The payer's approval page. POST `token` and `action` (approve, decline, pending,
        cancel)."""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        order_id = form.get("token") or request.query_params.get("token") or ""
        found = self._order_anywhere(order_id)
        if found is None:
            return HTMLResponse("<h1>This order is not available</h1>", 404)
        _, order = found
        if request.method == "GET":
            unit = order["purchase_units"][0]["amount"]
            return HTMLResponse(
                f"<h1>PayPal sandbox checkout</h1><p>{unit['value']} {unit['currency_code']}</p>"
                f"<form method=post><input type=hidden name=token value={order_id}>"
                "<button name=action value=approve>Pay</button>"
                "<button name=action value=cancel>Cancel</button></form>"
            )
        action = form.get("action") or ""
        # An approved order whose capture was declined goes back to its payer (PayPal
        # sends them to the same link to choose another funding source).
        if order["status"] not in ("PAYER_ACTION_REQUIRED", "APPROVED"):
            return JSONResponse({"status": order["status"]}, 409)
        if action == "cancel":
            target = order.get("_cancel_url")
            query = urlencode({"token": order_id})
        elif action in ("approve", "decline", "pending"):
            order["status"] = "APPROVED"
            order["_funding"] = None if action == "approve" else action
            order["payer"] = {"email_address": "payer@example.com", "payer_id": _id(13)}
            self._event("CHECKOUT.ORDER.APPROVED", "checkout-order", _public(order))
            target = order.get("_return_url")
            query = urlencode({"token": order_id, "PayerID": order["payer"]["payer_id"]})
        else:
            return JSONResponse({"error": "action is approve, decline, pending or cancel"}, 400)
        if target:
            joiner = "&" if "?" in target else "?"
            return RedirectResponse(f"{target}{joiner}{query}", 303)
        return JSONResponse({"status": order["status"]})

    async def certificate(self, request: Request) -> Response:
        if request.path_params["name"] != CERT_NAME:
            return self.error_response(404, message="The specified resource does not exist.")
        return Response(signing_identity()[1], media_type="application/x-pem-file")

    # Webhooks -----------------------------------------------------------------------------

    def _event(self, kind: str, resource_type: str, resource: dict[str, Any]) -> None:
        webhook_id = self.webhook_id
        url = self.callbacks.url
        if webhook_id is None or url is None or not self.callbacks.enabled:
            return
        event = {
            "id": f"WH-{_id(17)}-{_id(17)}",
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": kind,
            "summary": kind.replace(".", " ").title(),
            "resource": json.loads(json.dumps(resource, default=str)),  # the state now
            "links": [],
        }
        self.callbacks.schedule([self.signed(event, webhook_id)])

    def cert_url(self) -> str:
        """Where this emulator's certificate is served (under the gateway's mount)."""
        return f"{self.public_base}/v1/notifications/certs/{CERT_NAME}"

    def signed(self, event: dict[str, Any], webhook_id: str) -> RequestBuilder:
        raw = json.dumps(event, separators=(",", ":")).encode()
        key, _ = signing_identity()
        cert_url = self.cert_url()

        def build() -> CallbackRequest:
            transmission_id, at = str(uuid.uuid4()), _now()
            message = paypal_message(transmission_id, at, webhook_id, raw)
            return CallbackRequest(
                raw,
                {
                    "content-type": "application/json",
                    "user-agent": "PayPal/AUHD-214.0-58285591",
                    "paypal-transmission-id": transmission_id,
                    "paypal-transmission-time": at,
                    "paypal-transmission-sig": sign(key, message),
                    "paypal-cert-url": cert_url,
                    "paypal-auth-algo": "SHA256withRSA",
                },
            )

        return build


def _answer(body: dict[str, Any], status: int) -> Response:
    return Response(status_code=204) if status == 204 else JSONResponse(body, status)


def _check_amount(currency: str, value: str) -> None:
    if currency not in CURRENCIES:
        raise _unprocessable("CURRENCY_NOT_SUPPORTED", "Currency code is not supported.")
    if not _AMOUNT.match(value):
        raise _invalid(
            "INVALID_PARAMETER_SYNTAX",
            "The value of a field does not conform to the expected format.",
        )
    places = len(value.partition(".")[2])
    if places > CURRENCIES[currency]:
        raise _unprocessable(
            "DECIMAL_PRECISION",
            "If the currency supports decimals, only two decimal place precision is supported.",
        )
    if Decimal(value) <= 0:
        raise _unprocessable("AMOUNT_MUST_BE_POSITIVE", "The amount must be greater than zero.")


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as PayPal shows it (without the emulator's own `_` fields)."""
    return json.loads(
        json.dumps({k: v for k, v in obj.items() if not k.startswith("_")}, default=str)
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def create_app() -> PayPalSandbox:
    return PayPalSandbox()
