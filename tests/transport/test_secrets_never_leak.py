"""A stored secret never comes back: not in any answer, error, log record or metric.

A recognisable secret (no vendor prefix, so log scrubbing patterns cannot be what
hides it) goes through every credentials query and mutation, their error paths and
a failing vendor call; every answer body, every log record (raw, at DEBUG, before
any scrubbing) and the metrics page are searched for the secret and for every
8-character piece of it.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
from typing import Any

import httpx

from tests.credentials.test_credentials import (
    MY_LIST,
    REMOVE_MINE,
    REMOVE_TENANT,
    SET_MINE,
    SET_TENANT,
    TENANT_LIST,
    member_token,
)
from tests.integrations.test_integrations import ERRORS, HEALTH


def canary() -> str:
    # Letters and digits only, mixed case: looks like no pattern the scrubber knows.
    return "Cnry" + "".join(
        pysecrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789")
        for _ in range(36)
    )


def pieces(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def assert_absent(secret: str, blob: str, where: str) -> None:
    for piece in pieces(secret):
        assert piece not in blob, f"a piece of the secret ({piece!r}) appeared in {where}"


def record_text(record: logging.LogRecord) -> str:
    parts = [str(record.msg), repr(record.args)]
    try:
        parts.append(record.getMessage())
    except Exception:
        pass
    parts.extend(f"{k}={v!r}" for k, v in record.__dict__.items() if k not in {"msg", "args"})
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


async def test_stored_secrets_never_leak(client, owner, settings, live_server, app, caplog):
    caplog.set_level(logging.DEBUG)
    tenant_secret, my_secret, resend_secret = canary(), canary(), canary()
    support, _ = await member_token(settings, owner, "SUPPORT")
    read_only, _ = await member_token(settings, owner, "READ_ONLY")
    answers: list[str] = []

    async def call(
        query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        answers.append(response.text)
        answers.append(str(dict(response.headers)))
        return response.json()

    def openai(secret: str, **more: Any) -> dict[str, Any]:
        return {"input": {"provider": "OPENAI", "secrets": {"apiKey": secret, **more}}}

    sandbox = f"{live_server}/sandbox/resend"
    try:
        # The happy paths.
        assert "errors" not in await call(
            SET_TENANT, openai(tenant_secret, organization="org-x"), owner.token
        )
        assert "errors" not in await call(SET_MINE, openai(my_secret), support)
        await call(TENANT_LIST, token=owner.token)
        await call(MY_LIST, token=support)
        listed = await call(TENANT_LIST, token=owner.token)
        gid = listed["data"]["tenantCredentials"]["edges"][0]["node"]["id"]
        await call(
            "query($id: ID!) { node(id: $id) { id"
            " ... on ProviderCredential { provider lastFour fields } } }",
            {"id": gid},
            owner.token,
        )
        await call(HEALTH, token=owner.token)

        # Error paths carrying the secret in every position an input can hold it.
        await call(SET_TENANT, openai(tenant_secret), read_only)  # FORBIDDEN
        await call(SET_TENANT, openai(tenant_secret))  # UNAUTHENTICATED
        await call(SET_TENANT, openai(tenant_secret, colour=tenant_secret), owner.token)
        await call(
            SET_TENANT,
            {"input": {"provider": "OPENAI", "secrets": {tenant_secret: "x"}}},
            owner.token,
        )
        await call(SET_TENANT, openai(tenant_secret, baseUrl=f"ftp://{tenant_secret}"), owner.token)
        await call(SET_TENANT, openai(tenant_secret * 120), owner.token)  # too long
        await call(SET_TENANT, openai(tenant_secret + "\x01"), owner.token)
        await call(
            SET_TENANT, {"input": {"provider": "OPENAI", "secrets": tenant_secret}}, owner.token
        )
        await call(
            SET_TENANT,
            {"input": {"provider": "NOPE", "secrets": {"apiKey": tenant_secret}}},
            owner.token,
        )
        await call(SET_TENANT, {"input": {"secrets": {"apiKey": tenant_secret}}}, owner.token)
        await call(
            SET_TENANT,
            {
                "input": {
                    "provider": "OPENAI",
                    "secrets": {"apiKey": tenant_secret},
                    "extra": tenant_secret,
                }
            },
            owner.token,
        )
        await call(
            SET_TENANT,
            {"input": {"provider": "TWILIO", "secrets": {"authToken": tenant_secret}}},
            owner.token,
        )

        # The vendor refuses a key, then the vendor is down: both go through real HTTP.
        refused = "invalid" + resend_secret
        await call(
            SET_TENANT,
            {"input": {"provider": "RESEND", "secrets": {"apiKey": refused, "baseUrl": sandbox}}},
            owner.token,
        )
        async with httpx.AsyncClient() as raw:
            await raw.post(f"{sandbox}/_sandbox/faults", json={"status": 500, "count": -1})
            try:
                await call(
                    SET_TENANT,
                    {
                        "input": {
                            "provider": "RESEND",
                            "secrets": {"apiKey": resend_secret, "baseUrl": sandbox},
                        }
                    },
                    owner.token,
                )
            finally:
                await raw.delete(f"{sandbox}/_sandbox/faults")
        await call(ERRORS, token=owner.token)
        await call(HEALTH, token=owner.token)

        await call(REMOVE_MINE, {"input": {"provider": "OPENAI"}}, support)
        await call(REMOVE_TENANT, {"input": {"provider": "OPENAI"}}, owner.token)
        await call(REMOVE_TENANT, {"input": {"provider": "OPENAI"}}, owner.token)  # NOT_FOUND
        ready = await client.get("/health/ready")
        answers.append(ready.text)
        async with httpx.AsyncClient(base_url=live_server) as local:
            answers.append((await local.get("/metrics")).text)
    finally:
        await app.state.services.providers.aclose()

    logs = "\n".join(record_text(r) for r in caplog.records)
    assert caplog.records  # the paths above do log
    for secret in (tenant_secret, my_secret, resend_secret):
        for i, answer in enumerate(answers):
            assert_absent(secret, answer, f"answer #{i}")
        assert_absent(secret, logs, "the logs")
