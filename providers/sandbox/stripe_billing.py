"""The Stripe sandbox's billing: prices, Checkout sessions for subscriptions, the hosted
Checkout and customer-portal pages, subscriptions and their invoices, as Stripe's Billing
API answers them (https://docs.stripe.com/api/checkout/sessions,
/api/subscriptions, /api/customer_portal/sessions, /api/invoices).

- `POST /v1/prices` (`unit_amount`, `currency`, `recurring[interval]`, `product_data[name]`),
  `GET /v1/prices/{id}`. Every account knows `price_switchboard_pro` (29.00 EUR a month)
  and `price_switchboard_business` (99.00 EUR a month), the gateway's default plans.
- `POST /v1/checkout/sessions` (mode `subscription`, an existing `customer`, one line item
  with a known price, `success_url`, `cancel_url`, `client_reference_id`, `metadata`,
  `subscription_data[metadata]`) → an open session whose `url` is this sandbox's hosted
  page `/c/pay/{id}`: `POST` to it with `outcome=pay` is the customer paying (an active
  subscription, a paid invoice; `customer.subscription.created`, `invoice.paid`,
  `checkout.session.completed`, then a 303 to the success URL with `{CHECKOUT_SESSION_ID}`
  filled in), `outcome=cancel` leaving (303 to the cancel URL).
- `POST /v1/billing_portal/sessions` (`customer`, `return_url`) → a session whose `url` is
  `/p/session/{id}`: `POST` with `action=cancel` (at period end), `action=cancel_now`,
  `action=resume` or `action=switch&price=…` (a new paid invoice), each sending its
  `customer.subscription.updated` / `.deleted` event, then a 303 to the return URL.
- `GET/POST/DELETE /v1/subscriptions/{id}` (update: `cancel_at_period_end`,
  `items[0][id]` + `items[0][price]`; delete: canceled now), `GET /v1/invoices?customer=`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import mounted_url

if TYPE_CHECKING:
    from providers.sandbox.stripe import Account

PERIOD = 30 * 24 * 3600
SEEDED_PRICES = {
    "price_switchboard_pro": ("Switchboard Pro", 2900, "eur"),
    "price_switchboard_business": ("Switchboard Business", 9900, "eur"),
}


class StripeBilling:
    """Mixed into `StripeSandbox`, whose plumbing (`_h`, `_get`, `_list`, `_event`,
    `_fail`, `_new_id`, `accounts`) it uses."""

    accounts: dict[str, Account]

    if TYPE_CHECKING:

        def _h(self, fn: Any) -> Any: ...
        def _get(self, account: Account, object_id: str, kind: str) -> dict[str, Any]: ...
        def _list(
            self, account: Account, request: Request, kind: str, params: dict[str, Any],
            **where: Any,
        ) -> tuple[int, dict[str, Any]]: ...  # fmt: skip
        def _event(self, account: Account, kind: str, obj: dict[str, Any]) -> None: ...
        def _fail(self, status: int, message: str, **extra: Any) -> Exception: ...
        def _new_id(self, prefix: str) -> str: ...
        def _charge_method(self, account: Account, method: str | None, what: str) -> None: ...

    def billing_routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/prices", self._h(self.prices), methods=["POST"]),
            Route("/v1/prices/{id}", self._h(self.price), methods=["GET"]),
            Route("/v1/checkout/sessions", self._h(self.checkout_sessions), methods=["POST"]),
            Route("/v1/checkout/sessions/{id}", self._h(self.checkout_session), methods=["GET"]),
            Route("/v1/billing_portal/sessions", self._h(self.portal_sessions), methods=["POST"]),
            Route("/v1/subscriptions", self._h(self.subscriptions), methods=["GET", "POST"]),
            Route(
                "/v1/subscriptions/{id}",
                self._h(self.subscription),
                methods=["GET", "POST", "DELETE"],
            ),
            Route("/v1/invoices", self._h(self.invoices), methods=["GET", "POST"]),
            Route("/v1/invoices/{id}", self._h(self.invoice), methods=["GET"]),
            Route("/v1/invoices/{id}/finalize", self._h(self.finalize), methods=["POST"]),
            Route("/v1/invoices/{id}/pay", self._h(self.pay_invoice), methods=["POST"]),
            Route("/v1/invoiceitems", self._h(self.invoice_items), methods=["POST"]),
            Route("/c/pay/{id}", self.hosted_checkout, methods=["GET", "POST"]),
            Route("/p/session/{id}", self.hosted_portal, methods=["GET", "POST"]),
        ]

    # Prices -------------------------------------------------------------------------------

    def _price(self, account: Account, price_id: str, param: str = "price") -> dict[str, Any]:
        found = account.objects.get(price_id)
        if found is None and price_id in SEEDED_PRICES:
            name, amount, currency = SEEDED_PRICES[price_id]
            found = account.put(self._price_object(price_id, name, amount, currency, "month"))
        if found is None or found.get("object") != "price":
            raise self._fail(404, f"No such price: '{price_id}'", code="resource_missing",
                             param=param)  # fmt: skip
        return found

    def _price_object(
        self, price_id: str, name: str, amount: int, currency: str, interval: str
    ) -> dict[str, Any]:
        return {
            "id": price_id, "object": "price", "active": True, "created": int(time.time()),
            "currency": currency, "unit_amount": amount, "livemode": False,
            "product": self._new_id("prod"), "nickname": name, "type": "recurring",
            "recurring": {"interval": interval, "interval_count": 1},
        }  # fmt: skip

    def prices(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        try:
            amount = int(str(params.get("unit_amount")))
        except ValueError:
            raise self._fail(400, "Invalid integer: unit_amount", param="unit_amount") from None
        currency = str(params.get("currency") or "").lower()
        recurring = params.get("recurring") if isinstance(params.get("recurring"), dict) else {}
        interval = str((recurring or {}).get("interval") or "month")
        product = params.get("product_data") if isinstance(params.get("product_data"), dict) else {}
        if amount < 0 or len(currency) != 3 or interval not in ("day", "week", "month", "year"):
            raise self._fail(400, "Invalid price parameters.", param="unit_amount")
        name = str((product or {}).get("name") or "Price")
        return 200, account.put(
            self._price_object(self._new_id("price"), name, amount, currency, interval)
        )

    def price(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        return 200, self._price(account, request.path_params["id"], "id")

    # Checkout -----------------------------------------------------------------------------

    def checkout_sessions(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        if params.get("mode") != "subscription":
            raise self._fail(400, "This sandbox's Checkout makes subscriptions only.",
                             param="mode")  # fmt: skip
        customer = str(params.get("customer") or "")
        self._get(account, customer, "customer")
        items = params.get("line_items")
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            raise self._fail(400, "One line item is required.", param="line_items")
        price = self._price(account, str(items[0].get("price") or ""), "line_items[0][price]")
        for url in ("success_url", "cancel_url"):
            if not str(params.get(url) or "").startswith(("http://", "https://")):
                raise self._fail(400, f"Not a valid URL: {url}", param=url)
        data = params.get("subscription_data")
        session = account.put({
            "id": self._new_id("cs_test"), "object": "checkout.session", "mode": "subscription",
            "status": "open", "payment_status": "unpaid", "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": dict(params.get("metadata") or {}), "subscription": None,
            "success_url": params["success_url"], "cancel_url": params["cancel_url"],
            "created": int(time.time()), "expires_at": int(time.time()) + 24 * 3600,
            "livemode": False, "url": None, "_price": price["id"],
            "_subscription_metadata": dict((data or {}).get("metadata") or {})
            if isinstance(data, dict) else {},
        })  # fmt: skip
        session["url"] = f"{mounted_url(request)}/c/pay/{session['id']}"
        return 200, _public(session)

    def checkout_session(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        return 200, _public(self._get(account, request.path_params["id"], "checkout.session"))

    def _find(self, object_id: str, kind: str) -> tuple[Account, dict[str, Any]] | None:
        for account in self.accounts.values():
            found = account.objects.get(object_id)
            if found is not None and found.get("object") == kind:
                return account, found
        return None

    async def hosted_checkout(self, request: Request) -> Response:
        found = self._find(request.path_params["id"], "checkout.session")
        if found is None:
            return HTMLResponse("<h1>This checkout session does not exist</h1>", 404)
        account, session = found
        if request.method == "GET":
            return HTMLResponse(
                "<h1>Stripe sandbox Checkout</h1><form method=post>"
                "<button name=outcome value=pay>Subscribe</button>"
                "<button name=outcome value=cancel>Back</button></form>"
            )
        if session["status"] != "open":
            return JSONResponse({"status": session["status"]}, 409)
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if form.get("outcome") == "cancel":
            return RedirectResponse(session["cancel_url"], 303)
        price = self._price(account, session["_price"])
        now = int(time.time())
        item = {"id": self._new_id("si"), "object": "subscription_item", "price": price,
                "quantity": 1, "current_period_start": now,
                "current_period_end": now + PERIOD}  # fmt: skip
        subscription = account.put({
            "id": self._new_id("sub"), "object": "subscription", "status": "active",
            "customer": session["customer"], "created": now, "livemode": False,
            "items": {"object": "list", "data": [item], "has_more": False},
            "current_period_start": now, "current_period_end": now + PERIOD,
            "cancel_at_period_end": False, "canceled_at": None,
            "metadata": dict(session["_subscription_metadata"]),
        })  # fmt: skip
        invoice = self._invoice(request, account, subscription, price)
        session.update(status="complete", payment_status="paid", subscription=subscription["id"])
        self._event(account, "customer.subscription.created", subscription)
        self._event(account, "invoice.paid", invoice)
        self._event(account, "checkout.session.completed", _public(session))
        target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"])
        return RedirectResponse(target, 303)

    def _invoice(
        self, request: Request, account: Account, subscription: dict[str, Any],
        price: dict[str, Any], *, paid: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        invoice = self._new_invoice(
            request, account, subscription["customer"], price["currency"],
            subscription=subscription["id"], period=(subscription["current_period_start"],
                                                     subscription["current_period_end"]),
        )  # fmt: skip
        self._add_line(invoice, price["unit_amount"], price.get("nickname") or price["id"])
        self._number(account, invoice)
        invoice["status"] = "paid" if paid else "open"
        invoice["amount_paid"] = invoice["amount_due"] if paid else 0
        subscription["latest_invoice"] = invoice["id"]
        return invoice

    def _new_invoice(
        self, request: Request, account: Account, customer: str, currency: str, *,
        subscription: str | None = None, period: tuple[int, int] | None = None,
        description: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        invoice_id = self._new_id("in")
        base = mounted_url(request)
        now = int(time.time())
        return account.put({
            "id": invoice_id, "object": "invoice", "status": "draft", "livemode": False,
            "number": None, "customer": customer, "subscription": subscription,
            "currency": currency, "amount_due": 0, "amount_paid": 0, "created": now,
            "period_start": period[0] if period else now,
            "period_end": period[1] if period else now, "description": description,
            "metadata": dict(metadata or {}),
            "lines": {"object": "list", "data": [], "has_more": False},
            "hosted_invoice_url": f"{base}/i/{invoice_id}",
            "invoice_pdf": f"{base}/i/{invoice_id}/pdf",
        })  # fmt: skip

    @staticmethod
    def _add_line(invoice: dict[str, Any], amount: int, description: str) -> None:
        invoice["lines"]["data"].append(
            {"object": "line_item", "amount": amount, "description": description}
        )
        invoice["amount_due"] += amount

    @staticmethod
    def _number(account: Account, invoice: dict[str, Any]) -> None:
        count = sum(
            1 for o in account.objects.values() if o.get("object") == "invoice" and o["number"]
        )
        invoice["number"] = f"SBX-{count + 1:04d}"

    # The customer portal ------------------------------------------------------------------

    def portal_sessions(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        customer = str(params.get("customer") or "")
        self._get(account, customer, "customer")
        session = account.put({
            "id": self._new_id("bps"), "object": "billing_portal.session",
            "customer": customer, "return_url": params.get("return_url"),
            "created": int(time.time()), "livemode": False, "url": None,
        })  # fmt: skip
        session["url"] = f"{mounted_url(request)}/p/session/{session['id']}"
        return 200, session

    async def hosted_portal(self, request: Request) -> Response:
        found = self._find(request.path_params["id"], "billing_portal.session")
        if found is None:
            return HTMLResponse("<h1>This portal session does not exist</h1>", 404)
        account, session = found
        if request.method == "GET":
            return HTMLResponse("<h1>Stripe sandbox customer portal</h1>")
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        subscription = next(
            (o for o in reversed(account.objects.values())
             if o.get("object") == "subscription" and o["customer"] == session["customer"]
             and o["status"] != "canceled"),
            None,
        )  # fmt: skip
        if subscription is None:
            return JSONResponse({"error": "no active subscription"}, 409)
        action = form.get("action")
        if action == "cancel":
            subscription["cancel_at_period_end"] = True
        elif action == "resume":
            subscription["cancel_at_period_end"] = False
        elif action == "cancel_now":
            self._cancel(account, subscription)
        elif action == "switch":
            price = self._price(account, form.get("price") or "")
            subscription["items"]["data"][0]["price"] = price
            self._invoice(request, account, subscription, price)
        else:
            return JSONResponse({"error": "action: cancel, resume, cancel_now, switch"}, 400)
        if action != "cancel_now":
            self._event(account, "customer.subscription.updated", subscription)
        return RedirectResponse(session["return_url"] or "/", 303)

    # Subscriptions and invoices -----------------------------------------------------------

    def _cancel(self, account: Account, subscription: dict[str, Any]) -> None:
        subscription.update(status="canceled", canceled_at=int(time.time()))
        self._event(account, "customer.subscription.deleted", subscription)

    def subscription(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        subscription = self._get(account, request.path_params["id"], "subscription")
        if request.method == "DELETE":
            if subscription["status"] != "canceled":
                self._cancel(account, subscription)
        elif request.method == "POST":
            if subscription["status"] == "canceled":
                raise self._fail(400, "A canceled subscription can't be updated.")
            if "cancel_at_period_end" in params:
                subscription["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
            items = params.get("items")
            if isinstance(items, list) and items and isinstance(items[0], dict):
                price = self._price(account, str(items[0].get("price") or ""), "items[0][price]")
                subscription["items"]["data"][0]["price"] = price
            self._event(account, "customer.subscription.updated", subscription)
        return 200, subscription

    def subscriptions(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        if request.method == "GET":
            return self._list(
                account, request, "subscription", params, customer=params.get("customer")
            )
        customer = str(params.get("customer") or "")
        self._get(account, customer, "customer")
        items = params.get("items")
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            raise self._fail(400, "One item is required.", param="items")
        price = self._price(account, str(items[0].get("price") or ""), "items[0][price]")
        method = params.get("default_payment_method")
        now = int(time.time())
        item = {"id": self._new_id("si"), "object": "subscription_item", "price": price,
                "quantity": 1, "current_period_start": now,
                "current_period_end": now + PERIOD}  # fmt: skip
        subscription = account.put({
            "id": self._new_id("sub"), "object": "subscription", "status": "incomplete",
            "customer": customer, "created": now, "livemode": False,
            "items": {"object": "list", "data": [item], "has_more": False},
            "current_period_start": now, "current_period_end": now + PERIOD,
            "cancel_at_period_end": False, "canceled_at": None, "latest_invoice": None,
            "default_payment_method": method, "metadata": dict(params.get("metadata") or {}),
        })  # fmt: skip
        invoice = self._invoice(request, account, subscription, price, paid=False)
        self._event(account, "invoice.finalized", invoice)
        try:
            self._charge_method(account, str(method) if method else None, "subscription")
        except Exception as exc:
            declined = getattr(exc, "status", None) == 402
            if method and not declined:
                raise  # not a payment method of this account
            if declined and params.get("payment_behavior") == "error_if_incomplete":
                raise
            if declined:
                self._event(account, "invoice.payment_failed", invoice)
        else:
            self._paid(account, invoice)
        self._event(account, "customer.subscription.created", subscription)
        return 200, subscription

    def _paid(self, account: Account, invoice: dict[str, Any]) -> None:
        invoice.update(status="paid", amount_paid=invoice["amount_due"])
        self._event(account, "invoice.paid", invoice)
        subscription = account.objects.get(invoice.get("subscription") or "")
        if subscription is not None and subscription["status"] in ("incomplete", "past_due"):
            subscription["status"] = "active"
            self._event(account, "customer.subscription.updated", subscription)

    def invoices(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        if request.method == "GET":
            return self._list(account, request, "invoice", params, customer=params.get("customer"))
        customer = str(params.get("customer") or "")
        self._get(account, customer, "customer")
        currency = str(params.get("currency") or "eur").lower()
        if len(currency) != 3:
            raise self._fail(400, f"Invalid currency: {currency}.", param="currency")
        invoice = self._new_invoice(
            request, account, customer, currency,
            description=str(params.get("description") or "")[:500] or None,
            metadata=params.get("metadata") if isinstance(params.get("metadata"), dict) else {},
        )  # fmt: skip
        return 200, invoice

    def invoice_items(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        invoice = self._get(account, str(params.get("invoice") or ""), "invoice")
        if invoice["status"] != "draft":
            raise self._fail(400, "Only a draft invoice takes items.", param="invoice")
        if params.get("customer") != invoice["customer"]:
            raise self._fail(400, "The item's customer is not the invoice's.", param="customer")
        try:
            amount = int(str(params.get("amount")))
        except ValueError:
            raise self._fail(400, "Invalid integer: amount", param="amount") from None
        if not 0 < amount <= 99_999_999:
            raise self._fail(400, "Invalid amount.", param="amount")
        description = str(params.get("description") or "")[:500]
        self._add_line(invoice, amount, description)
        item = account.put(
            {
                "id": self._new_id("ii"),
                "object": "invoiceitem",
                "invoice": invoice["id"],
                "amount": amount,
                "currency": invoice["currency"],
                "description": description,
            }
        )
        return 200, item

    def invoice(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        return 200, self._get(account, request.path_params["id"], "invoice")

    def finalize(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        invoice = self._get(account, request.path_params["id"], "invoice")
        if invoice["status"] != "draft":
            raise self._fail(
                400, f"This invoice is already finalized (status {invoice['status']}).",
                code="invoice_not_editable",
            )  # fmt: skip
        if invoice["amount_due"] <= 0:
            raise self._fail(400, "An invoice without items can't be finalized.",
                             code="invoice_no_customer_line_items")  # fmt: skip
        self._number(account, invoice)
        invoice["status"] = "open"
        self._event(account, "invoice.finalized", invoice)
        return 200, invoice

    def pay_invoice(self, request: Request, account: Account, params: dict[str, Any]) -> Any:
        invoice = self._get(account, request.path_params["id"], "invoice")
        if invoice["status"] == "paid":
            raise self._fail(400, "Invoice is already paid.", code="invoice_already_paid")
        if invoice["status"] != "open":
            raise self._fail(400, f"This invoice can't be paid (status {invoice['status']}).",
                             code="invoice_not_open")  # fmt: skip
        method = params.get("payment_method")
        if not method and invoice.get("subscription"):
            subscription = account.objects.get(invoice["subscription"]) or {}
            method = subscription.get("default_payment_method")
        try:
            self._charge_method(account, str(method) if method else None, "invoice")
        except Exception as exc:
            if getattr(exc, "status", None) == 402:
                self._event(account, "invoice.payment_failed", invoice)
            raise
        self._paid(account, invoice)
        return 200, invoice


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}
