"""A served gateway whose PUBLIC_URL is its own address, so its sign-in sandboxes
(`/sandbox/google`, `/sandbox/github`) are reached over real HTTP, by the gateway for the
token and API calls and by the test's client, playing the browser, for the redirects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import Store, free_port, make_settings, running_server

FRONT_END = "https://app.example"


@dataclass
class Site:
    url: str
    app: Any
    browser: httpx.AsyncClient  # keeps the cookies, follows nothing

    async def person(self, provider: str, email: str, **more: Any) -> None:
        answer = await self.browser.post(
            f"/sandbox/{provider}/_sandbox/users", json={"email": email, **more}
        )
        assert answer.status_code == 200, answer.text

    async def start(self, provider: str, hint: str) -> str:
        """The provider's authorization URL the start route redirects to."""
        started = await self.browser.get(f"/auth/{provider}/start", params={"login_hint": hint})
        assert started.status_code == 302, started.text
        return started.headers["location"]

    async def at_provider(self, authorize_url: str) -> str:
        """The callback URL the provider sends the browser back to."""
        answer = await self.browser.get(authorize_url)
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]

    async def back(self, callback_url: str) -> dict[str, str]:
        """The fragment the gateway's callback hands the front end."""
        answer = await self.browser.get(callback_url)
        assert answer.status_code == 302, answer.text
        location = answer.headers["location"]
        assert location.startswith(f"{FRONT_END}/auth/callback#"), location
        assert "access" not in location and "refresh" not in location
        return dict(parse_qsl(urlsplit(location).fragment))

    async def sign_in(self, provider: str, hint: str) -> dict[str, str]:
        return await self.back(await self.at_provider(await self.start(provider, hint)))


@pytest.fixture
async def site(store: Store) -> AsyncIterator[Site]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(
        database_url=store.url,
        public_url=url,
        frontend_url=FRONT_END,
        outbound_allowed_hosts=["127.0.0.1"],  # an organization's identity provider: the sandbox
    )
    app = create_app(settings, configure_logs=False)
    async with (
        running_server(app, port),
        httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=30) as browser,
    ):
        yield Site(url, app, browser)
