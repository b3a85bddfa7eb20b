"""GraphiQL that works without the internet: strawberry's page, its assets served here.

Strawberry's GraphiQL page loads React, GraphiQL and the explorer plugin from a CDN, so
on a machine without internet (a laptop on a plane, a locked-down network) it is a
blank page. The same files, byte for byte (the page's `integrity` hashes still hold),
ship in `gateway/static/graphiql/` and are served at `ASSETS_PATH`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from strawberry.http.ides import get_graphql_ide_html

ASSETS_PATH = "/graphiql/assets"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "static" / "graphiql"
# CDN address in strawberry's page -> the file served here.
CDN_FILES = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": (
        "react-dom.production.min.js"
    ),
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": (
        "plugin-explorer.umd.js"
    ),
}


class MissingAsset(RuntimeError):
    """Strawberry's page names a CDN file that is not shipped here (after an upgrade)."""


def offline_html() -> str:
    """Strawberry's GraphiQL page with every CDN address replaced by a local one."""
    html = get_graphql_ide_html(graphql_ide="graphiql")
    for url, name in CDN_FILES.items():
        if url not in html:
            raise MissingAsset(f"strawberry's GraphiQL page no longer loads {url}")
        html = html.replace(url, f"{ASSETS_PATH}/{name}")
    if "https://unpkg.com/" in html or "https://cdn.jsdelivr.net/" in html:
        raise MissingAsset("strawberry's GraphiQL page loads a file not shipped here")
    return html


def routes() -> list[BaseRoute]:
    return [Mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="graphiql-assets")]
