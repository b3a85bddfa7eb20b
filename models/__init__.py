"""Tortoise models, one module per area, and the tenant-scoping helpers.

`MODEL_MODULES` is the one list Tortoise is initialised with; add a new area's
module here.
"""

MODEL_MODULES: list[str] = [
    "models.tenants",
    "models.accounts",
    "models.identity",
    "models.members",
    "models.apikeys",
    "models.mail",
    "models.mailbox",
    "models.invoices",
    "models.credentials",
    "models.integrations",
    "models.jobs",
    "models.events",
    "models.contacts",
    "models.leads",
    "models.tasks",
    "models.ai",
    "models.webhooks",
    "models.files",
    "models.payments",
    "models.messaging",
    "models.inbox",
    "models.billing",
    "models.calendar",
    "models.meetings",
    "models.notion",
    "models.knowledge",
]
