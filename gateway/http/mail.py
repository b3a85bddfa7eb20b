"""`/mail/unsubscribe/{token}`: a broadcast's unsubscribe link.

`POST` is RFC 8058's one-click unsubscribe (mail clients send `List-Unsubscribe=One-Click`
there, without asking the reader again) and the confirmation page's button: the address
goes on the organization's suppression list. `GET` only shows that page — link scanners
and prefetchers open links, and must not unsubscribe anybody. The token is a path
parameter named `token`, which the access log never writes.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from resolvers import mail

MAX_FORM_BYTES = 4096

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title></head>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem">
<h1 style="font-size:1.25rem">{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def confirm_page(request: Request) -> Response:
    return _page(
        "Unsubscribe",
        '<p>Stop receiving these emails?</p><form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def unsubscribe(request: Request) -> Response:
    size = 0
    async for chunk in request.stream():  # read (and bound) the form; its content is fixed
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return _page("Request too large", "", 413)
    if not await mail.unsubscribe(request.path_params["token"]):
        return _page("Link not found", "<p>This unsubscribe link is not valid.</p>", 404)
    return _page("You are unsubscribed", "<p>You will not receive these emails again.</p>")


def routes() -> list[BaseRoute]:
    return [
        Route("/mail/unsubscribe/{token}", confirm_page, methods=["GET"]),
        Route("/mail/unsubscribe/{token}", unsubscribe, methods=["POST"]),
    ]
