"""Meetings fixtures: a served gateway (its Zoom sandbox at its own PUBLIC_URL, posting its
signed webhooks back to `/webhooks/zoom`), an in-process worker for the inbox jobs, and an
organization with Zoom connected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.http.sandbox import sandbox_zoom_secret
from tests.conftest import Account, Store, free_port, gql, make_settings, register, running_server

CONNECT_ZOOM = """mutation($i: ConnectZoomInput!) { connectZoom(input: $i) {
  connectedAccount { id status } } }"""


@dataclass
class Zoomed:
    url: str
    app: Any
    client: httpx.AsyncClient
    owner: Account

    @property
    def secret(self) -> str:
        """The secret token the Zoom sandbox signs its webhooks with."""
        return sandbox_zoom_secret(self.app.state.services.settings)

    @property
    def sandbox(self) -> Any:
        return self.app.state.services.sandboxes["zoom"]


async def connect_zoom(client: httpx.AsyncClient, url: str, owner: Account) -> None:
    body = await gql(
        client,
        CONNECT_ZOOM,
        {
            "i": {
                "accountId": "acct-meetings",
                "clientId": "meetings-client",
                "clientSecret": "meetings-secret-0123",
                "baseUrl": f"{url}/sandbox/zoom",
            }
        },
        owner.token,
    )
    assert "errors" not in body, body


@pytest.fixture
async def zoomed(store: Store, worker: Any) -> AsyncIterator[Zoomed]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(database_url=store.url, public_url=url, sandbox_webhooks=True)
    app = create_app(settings, configure_logs=False)
    await worker(public_url=url)
    async with (
        running_server(app, port),
        httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=30) as client,
    ):
        owner = await register(client)
        await connect_zoom(client, url, owner)
        yield Zoomed(url, app, client, owner)
