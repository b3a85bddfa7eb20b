"""Every module that registers job handlers, periodic jobs or event listeners.

The worker imports exactly these (`gateway/worker.py`), without building the GraphQL
schema; a test checks that the schema's import graph registers nothing more. A new area
with a `@job_handler`, `@periodic` or `@listener` adds its module here.
"""

from __future__ import annotations

import importlib

HANDLER_MODULES: tuple[str, ...] = (
    "resolvers.jobs",  # retention
    "resolvers.mail",  # send queued mail; apply delivery webhooks
    "resolvers.invoices",  # submit invoices to Rossum; follow them (hooks and polls)
    "resolvers.payments",  # apply Stripe's and PayPal's payment webhooks
    "resolvers.billing",  # apply Stripe's subscription events to plans; re-read rate tiers
    "resolvers.mailbox",  # read every configured mailbox for invoices (periodic)
    "resolvers.messaging",  # send SMS / WhatsApp; apply Twilio's status callbacks
    "resolvers.inbox",  # file incoming messages in conversations
    "resolvers.meetings",  # apply Zoom's meeting webhooks
    "resolvers.webhooks_in",  # process an incoming webhook
    "resolvers.webhooks_out",  # deliver an outgoing webhook; the outbox listener
    "resolvers.notion",  # sync the CRM's contacts into a user's Notion database
    "resolvers.knowledge",  # index a knowledge source (fetch, extract, chunk, embed)
)


def load() -> None:
    for name in HANDLER_MODULES:
        importlib.import_module(name)
