"""Provider sandboxes served by the gateway itself, under /sandbox/<provider>.

Only when sandboxes are enabled (outside production by default, SANDBOX_ENABLED
to force either way): a provider without credentials resolves to its sandbox's
URL here (`{PUBLIC_URL}/sandbox/<provider>`), so development works with no keys
and the real client code still speaks HTTP. The emulators are listed in
providers/sandbox/__init__.py; each instance is kept in
`services.sandboxes` (tests reach their state there).
"""

from __future__ import annotations

import logging

from starlette.routing import BaseRoute, Mount

from providers.sandbox import SANDBOXES, create_sandbox, sandbox_path
from resolvers.context import Services

log = logging.getLogger("switchboard.sandbox")


def routes(services: Services) -> list[BaseRoute]:
    if not services.settings.sandboxes_enabled:
        return []
    instances = services.sandboxes
    mounted: list[BaseRoute] = []
    for provider in SANDBOXES:
        app = instances.get(provider)
        if app is None:
            app = instances[provider] = create_sandbox(provider)
        mounted.append(Mount(sandbox_path(provider), app=app))
    log.info("sandboxes mounted", extra={"providers": sorted(instances)})
    return mounted
