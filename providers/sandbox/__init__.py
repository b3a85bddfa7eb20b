"""Vendor emulators (see base.py for the framework and how to add one).

`SANDBOXES` maps a provider to the factory of its emulator, as "module:function"
so a broken or slow emulator module costs nothing until it is served. The gateway
mounts every entry under `/sandbox/<provider>` when sandboxes are enabled. It is the one
list of providers that have an emulator (`has_sandbox`): only those resolve to the
sandbox and report `sandbox` in health.
"""

from __future__ import annotations

import importlib
from typing import Any

SANDBOXES: dict[str, str] = {
    "resend": "providers.sandbox.resend:create_app",
    "openai": "providers.sandbox.openai:create_app",
    "sendgrid": "providers.sandbox.sendgrid:create_app",
    "rossum": "providers.sandbox.rossum:create_app",
    "stripe": "providers.sandbox.stripe:create_app",
    "twilio": "providers.sandbox.twilio:create_app",
    "google": "providers.sandbox.google:create_app",
    "github": "providers.sandbox.github:create_app",
    "paypal": "providers.sandbox.paypal:create_app",
    "google_calendar": "providers.sandbox.google_calendar:create_app",
    "zoom": "providers.sandbox.zoom:create_app",
    "notion": "providers.sandbox.notion:create_app",
}


def has_sandbox(provider: str) -> bool:
    return provider in SANDBOXES


def create_sandbox(provider: str) -> Any:
    """A fresh emulator (an ASGI app) for `provider`; KeyError when there is none."""
    module_name, _, factory = SANDBOXES[provider].partition(":")
    return getattr(importlib.import_module(module_name), factory)()


def sandbox_path(provider: str) -> str:
    return f"/sandbox/{provider}"
