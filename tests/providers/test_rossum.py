"""The Rossum client against its sandbox, over real HTTP (uvicorn on loopback): logins
shared by concurrent callers, a refused token renewed once, an invoice PDF made here
walked to `exported` and its fields read back as exact Decimals, faults, and the field
mapping's tolerance of garbled values."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from kit.ratelimit import RateLimiter
from providers import rossum
from providers.breaker import BreakerPolicy
from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP
from providers.retry import RetryPolicy
from providers.rossum_fields import extract_invoice, parse_amount, parse_currency, parse_date
from providers.sandbox.rossum import RossumSandbox
from tests.conftest import eventually, running_server
from tests.pdfs import blank_pdf, invoice_pdf

FAST_RETRY = RetryPolicy(max_attempts=4, base=0.05, cap=0.2, budget=10.0)
_OPEN: list[ProviderHTTP] = []


@pytest.fixture
async def served() -> AsyncIterator[tuple[RossumSandbox, str, httpx.AsyncClient]]:
    app = RossumSandbox()
    app.step_seconds = 0.01
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as control:
        try:
            yield app, url, control
        finally:
            while _OPEN:
                await _OPEN.pop().aclose()


def client_for(
    url: str,
    *,
    tokens: rossum.TokenCache | None = None,
    password: str = "secret-password",
    token: str | None = None,
) -> rossum.RossumClient:
    cfg = ProviderConfig(
        name="rossum", retry=FAST_RETRY, breaker=BreakerPolicy(threshold=100), rate_limit=None
    )
    http = ProviderHTTP(cfg, limiter=RateLimiter())
    _OPEN.append(http)
    credential = rossum.RossumCredential.of(
        {"username": "ap@acme.test", "password": password, "queue_id": "7"}
        if token is None
        else {"api_token": token, "queue_id": "7"},
        url,
    )
    return rossum.RossumClient(http, tokens or rossum.TokenCache(), credential)


async def requests_to(control: httpx.AsyncClient, path: str) -> list[dict]:
    got = await control.get("/_sandbox/requests", params={"path": path})
    return got.json()["requests"]


async def walked_to(client: rossum.RossumClient, annotation_id: str, *statuses: str) -> str:
    async def status() -> str | None:
        got = (await client.get_annotation(annotation_id)).status
        return got if got in statuses else None

    return await eventually(status, f"annotation {annotation_id} in {statuses}")


async def test_an_invoice_pdf_is_uploaded_walked_to_exported_and_read_back(served) -> None:
    _app, url, control = served
    client = client_for(url)
    submitted = await client.submit(invoice_pdf("INV-2026-001"), "invoice 1.pdf")
    assert submitted.annotation_id and submitted.document_id

    [upload] = [r for r in await requests_to(control, "/uploads") if r["method"] == "POST"]
    assert upload["query"] == "queue=7"
    assert upload["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert upload["headers"]["authorization"].startswith("Bearer [sha256:")

    assert await walked_to(client, submitted.annotation_id, "exported") == "exported"
    invoice = await client.extract(submitted.annotation_id)
    assert invoice == rossum.ExtractedInvoice(
        invoice_number="INV-2026-001",
        vendor_name="Initech GmbH",
        total_amount=Decimal("1250.00"),
        currency="EUR",
        issue_date=dt.date(2026, 11, 30),
        due_date=dt.date(2026, 12, 31),
        line_items=[
            rossum.LineItem("Widget", Decimal("2"), Decimal("10.00"), Decimal("20.00")),
            rossum.LineItem(
                "Consulting, senior", Decimal("12.5"), Decimal("98.40"), Decimal("1230.00")
            ),
        ],
    )
    assert str(invoice.total_amount) == "1250.00"  # the digits as written, not a float's

    # The statuses it went through, each seen by the sandbox's document as Rossum's are.
    annotation = await client.get_annotation(submitted.annotation_id)
    assert annotation.done and not annotation.failed
    assert annotation.document_id == submitted.document_id and annotation.queue_id == "7"


async def test_one_login_serves_many_concurrent_calls(served) -> None:
    app, url, control = served
    tokens = rossum.TokenCache()
    clients = [client_for(url, tokens=tokens) for _ in range(3)]  # built per call, as resolvers do
    users = await asyncio.gather(*(clients[i % 3].current_user() for i in range(30)))
    assert all(u["username"] for u in users)
    assert len(await requests_to(control, "/auth/login")) == 1
    assert app.logins == 1
    # Every call carried the same token.
    auth = {r["headers"]["authorization"] for r in await requests_to(control, "/auth/user")}
    assert len(auth) == 1


async def test_a_refused_token_is_renewed_once_and_the_call_succeeds(served) -> None:
    app, url, control = served
    tokens = rossum.TokenCache()
    client = client_for(url, tokens=tokens)
    await client.current_user()
    # The token is ended behind our back (expired, or logged out elsewhere).
    [token] = list(app.tokens)
    app.logged_out.add(token)
    users = await asyncio.gather(
        *(client_for(url, tokens=tokens).current_user() for _ in range(10))
    )
    assert len(users) == 10
    assert len(await requests_to(control, "/auth/login")) == 2  # one renewal for all ten
    refused = [r for r in await requests_to(control, "/auth/user") if r["status"] == 401]
    assert 1 <= len(refused) <= 10

    # A 401 that persists after the renewal is the caller's answer (no loop of logins).
    await control.post("/_sandbox/faults", json={"status": 401, "path": "/auth/user", "count": 2})
    with pytest.raises(ProviderError) as caught:
        await client.current_user()
    assert caught.value.status == 401
    assert len(await requests_to(control, "/auth/login")) == 3


async def test_a_wrong_password_is_refused_and_a_static_token_needs_no_login(served) -> None:
    app, url, _control = served
    with pytest.raises(ProviderError) as caught:
        await rossum.verify_key(client_for(url, password="invalid-password"))
    assert caught.value.status == 401 and caught.value.vendor_code == "authentication_failed"

    await rossum.verify_key(client_for(url, token="static-api-token"))
    with pytest.raises(ProviderError) as refused:
        await rossum.verify_key(client_for(url, token="an-invalid-token"))
    assert refused.value.status == 401
    assert app.logins == 0


async def test_status_reads_are_retried_through_a_503_but_an_upload_is_not(served) -> None:
    app, url, control = served
    client = client_for(url)
    submitted = await client.submit(invoice_pdf("INV-503"), "inv.pdf")

    path = f"/annotations/{submitted.annotation_id}"
    await control.post("/_sandbox/faults", json={"status": 503, "path": path, "count": 2})
    annotation = await client.get_annotation(submitted.annotation_id)  # third try answers
    statuses = [r["status"] for r in await requests_to(control, path) if r["path"] == path]
    assert statuses[-3:] == [503, 503, 200] and annotation.id == submitted.annotation_id

    # Rossum has no idempotency key for uploads: a 503 may come after the annotation was
    # made, so the layer does not send the document again; the caller decides.
    before = len(app.annotations)
    await control.post(
        "/_sandbox/faults", json={"status": 503, "path": "/uploads", "method": "POST"}
    )
    with pytest.raises(ProviderError) as caught:
        await client.upload(invoice_pdf("INV-504"), "inv.pdf")
    assert caught.value.status == 503 and caught.value.retryable
    posts = [r for r in await requests_to(control, "/uploads") if r["method"] == "POST"]
    assert [r["status"] for r in posts] == [202, 503]
    assert len(app.annotations) == before
    # Submitting again once Rossum is back works, and makes exactly one more annotation.
    again = await client.submit(invoice_pdf("INV-504"), "inv.pdf")
    assert len(app.annotations) == before + 1
    await walked_to(client, again.annotation_id, "exported")
    assert (await client.extract(again.annotation_id)).invoice_number == "INV-504"

    # A 429 on the upload was refused before processing: that one is retried.
    await control.post(
        "/_sandbox/faults", json={"status": 429, "path": "/uploads", "retry_after": 0}
    )
    await client.upload(invoice_pdf("INV-429"), "inv.pdf")
    posts = [r for r in await requests_to(control, "/uploads") if r["method"] == "POST"]
    assert [r["status"] for r in posts][-2:] == [429, 202]


async def test_a_pdf_without_text_and_a_non_pdf_fail_their_import(served) -> None:
    _app, url, _control = served
    client = client_for(url)
    blank = await client.submit(blank_pdf(), "scan.pdf")
    assert (
        await walked_to(client, blank.annotation_id, "failed_import", "exported") == "failed_import"
    )
    annotation = await client.get_annotation(blank.annotation_id)
    assert annotation.failed and annotation.messages == ["No text could be read from the document."]

    junk = await client.submit(b"%PDF-1.4 this is not really a PDF", "junk.pdf")
    assert await walked_to(client, junk.annotation_id, "failed_import") == "failed_import"
    assert (await client.get_annotation(junk.annotation_id)).messages == [
        "The file is not a readable PDF document."
    ]
    assert (await client.extract(junk.annotation_id)).total_amount is None


async def test_garbled_values_come_back_as_none_never_an_error(served) -> None:
    _app, url, _control = served
    client = client_for(url)
    pdf = invoice_pdf(
        "INV-GARBLED",
        **{"Total": "1,25O.00 EUR", "Issue date": "30th of Novembr", "Due date": "2026-02-30"},
    )
    submitted = await client.submit(pdf, "garbled.pdf")
    await walked_to(client, submitted.annotation_id, "exported")
    invoice = await client.extract(submitted.annotation_id)
    assert invoice.invoice_number == "INV-GARBLED" and invoice.currency == "EUR"
    assert invoice.total_amount is None and invoice.issue_date is None and invoice.due_date is None
    assert invoice.line_items[0].total == Decimal("20.00")


async def test_a_document_asking_for_review_waits_in_to_review_until_confirmed(served) -> None:
    _app, url, control = served
    client = client_for(url)
    pdf = invoice_pdf("INV-REVIEW", Review="required")
    submitted = await client.submit(pdf, "review.pdf")
    assert await walked_to(client, submitted.annotation_id, "to_review") == "to_review"
    token = await client._token()
    confirmed = await control.post(
        f"/annotations/{submitted.annotation_id}/confirm",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert confirmed.status_code == 204
    assert await walked_to(client, submitted.annotation_id, "exported") == "exported"


def test_field_parsing_is_exact_and_tolerant() -> None:
    assert parse_amount("1,250.00") == Decimal("1250.00")
    assert parse_amount("1.250,00 EUR") == Decimal("1250.00")
    assert parse_amount("€ 12,50") == Decimal("12.50")
    assert parse_amount("1 234 567.89") == Decimal("1234567.89")
    assert parse_amount("-3") == Decimal("-3")
    assert parse_amount("1,250") == Decimal("1250")
    for bad in ("", "lots", "1,25O.00", "1,2,3", "12..5", "NaN", "Infinity", "9" * 60, None, 1.5):
        assert parse_amount(bad) is None, bad
    assert parse_currency("eur") == "EUR" and parse_currency("1,250.00 USD") == "USD"
    assert parse_currency("£") == "GBP" and parse_currency("12") is None
    assert parse_date("2026-11-30") == dt.date(2026, 11, 30)
    assert parse_date("30.11.2026") == dt.date(2026, 11, 30)
    assert parse_date("11/30/2026") is None and parse_date(20261130) is None

    # The export's shape (`value` on the datapoint) reads like the content API's.
    export = [
        {"category": "section", "children": [
            {"category": "datapoint", "schema_id": "document_id", "value": "E-1"},
            {"category": "datapoint", "schema_id": "amount_total", "value": "99.90"},
            {"category": "datapoint", "schema_id": "currency", "value": "czk"},
            {"category": "multivalue", "schema_id": "line_items", "children": [
                {"category": "tuple", "children": [
                    {"category": "datapoint", "schema_id": "item_description", "value": "Tea"},
                    {"category": "datapoint", "schema_id": "item_amount", "value": "99.90"},
                ]},
                "garbage",
            ]},
        ]},
        {"category": "datapoint", "schema_id": "date_due", "value": {"not": "a date"}},
    ]  # fmt: skip
    invoice = extract_invoice(export)
    assert invoice.invoice_number == "E-1" and invoice.total_amount == Decimal("99.90")
    assert invoice.currency == "CZK" and invoice.due_date is None
    assert invoice.line_items == [rossum.LineItem("Tea", None, None, Decimal("99.90"))]
    assert extract_invoice({"not": "a list"}) == rossum.ExtractedInvoice(
        None, None, None, None, None, None, []
    )
