"""Mail: every message the gateway sends is a row and a job, written in the caller's
transaction, so a crash loses nothing.

- `templates`: the Jinja2 catalogue (HTML autoescaped + text), `emailTemplates`,
  `previewEmailTemplate`.
- `compose`: addresses and the MIME message (headers through the `email` package, never
  concatenated).
- `outbox`: `queue(...)` writes a message and its send job in the caller's transaction.
- `chain`: the provider chain, Resend → SendGrid → SMTP, per tenant or system.
- `delivery`: the send jobs (one message; a bulk send's chunk over one connection).
- `tracking`: statuses in one forward-only order, the providers' delivery webhooks, and
  the `emailStatus` subscription.
- `suppression`: the tenant's suppression list and the one-click unsubscribe.
- `sending`: `sendEmail` and `sendBulkEmail`.
- `reading`: `sentEmails`.

This module is the area's public face: what other areas, the schema and the tests call.
"""

from __future__ import annotations

from resolvers.mail.chain import smtp_config, taken_by_sandbox
from resolvers.mail.compose import Recipient, build_message, sender_of
from resolvers.mail.delivery import BATCH_JOB, deliver, send_batch_job, send_job
from resolvers.mail.outbox import SEND_JOB, organization_name, queue
from resolvers.mail.reading import list_sent_emails
from resolvers.mail.sending import (
    BulkOutcome,
    BulkResult,
    MessageIn,
    RecipientIn,
    SendBulkEmailIn,
    SendEmailIn,
    send_bulk_email,
    send_email,
)
from resolvers.mail.suppression import (
    Suppressed,
    add_suppression,
    list_suppressions,
    remove_suppression,
    unsubscribe,
)
from resolvers.mail.templates import (
    TEMPLATES,
    Rendered,
    Template,
    list_templates,
    preview_template,
    render,
)
from resolvers.mail.tracking import FINAL, email_status

__all__ = [
    "BATCH_JOB",
    "FINAL",
    "SEND_JOB",
    "TEMPLATES",
    "BulkOutcome",
    "BulkResult",
    "MessageIn",
    "Recipient",
    "RecipientIn",
    "Rendered",
    "SendBulkEmailIn",
    "SendEmailIn",
    "Suppressed",
    "Template",
    "add_suppression",
    "build_message",
    "deliver",
    "email_status",
    "list_sent_emails",
    "list_suppressions",
    "list_templates",
    "organization_name",
    "preview_template",
    "queue",
    "remove_suppression",
    "render",
    "send_batch_job",
    "send_bulk_email",
    "send_email",
    "send_job",
    "sender_of",
    "smtp_config",
    "taken_by_sandbox",
    "unsubscribe",
]
