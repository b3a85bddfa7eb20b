"""Messaging: SMS and WhatsApp through Twilio, every message a row and a job written in
the caller's transaction, so a crash loses nothing.

- `account`: which Twilio account (tenant's → operator's → sandbox) and which senders.
- `outbox`: `queue(...)` writes a message, its send job and its `message.queued` event.
- `delivery`: the send jobs (claim, send at most once per claim, look up before a resend).
- `tracking`: statuses in one forward-only order, Twilio's status callbacks, the
  `messageStatus` subscription.
- `optout`: the tenant's opt-out list (STOP / START replies, Twilio's 21610, by hand).
- `sending`: `sendSms`, `sendWhatsApp`, `sendBulkSms`.
- `verification`: `sendVerificationCode`, `checkVerificationCode`.
- `reading`: `messages`.

This module is the area's public face: what other areas, the schema and the tests call.
"""

from __future__ import annotations

from resolvers.messaging.account import TwilioAccount, account_for
from resolvers.messaging.delivery import deliver, send_batch_job, send_job
from resolvers.messaging.optout import (
    OptedOut,
    add_opt_out,
    keyword,
    list_opt_outs,
    opt_in,
    opt_out,
    opted_out,
    remove_opt_out,
)
from resolvers.messaging.outbox import BATCH_JOB, SEND_JOB, event_data, queue, shown_body
from resolvers.messaging.reading import list_messages
from resolvers.messaging.sending import (
    BulkOutcome,
    BulkRecipientIn,
    BulkResult,
    SendBulkSmsIn,
    SendSmsIn,
    SendWhatsAppIn,
    TemplateIn,
    check_body,
    check_whatsapp,
    send_bulk_sms,
    send_sms,
    send_whatsapp,
)
from resolvers.messaging.tracking import FINAL, RANK, advance, is_final, message_status
from resolvers.messaging.verification import InvalidCode, SentCode, check_code, send_code

__all__ = [
    "BATCH_JOB",
    "FINAL",
    "RANK",
    "SEND_JOB",
    "BulkOutcome",
    "BulkRecipientIn",
    "BulkResult",
    "InvalidCode",
    "OptedOut",
    "SendBulkSmsIn",
    "SendSmsIn",
    "SendWhatsAppIn",
    "SentCode",
    "TemplateIn",
    "TwilioAccount",
    "account_for",
    "add_opt_out",
    "advance",
    "check_body",
    "check_code",
    "check_whatsapp",
    "deliver",
    "event_data",
    "is_final",
    "keyword",
    "list_messages",
    "list_opt_outs",
    "message_status",
    "opt_in",
    "opt_out",
    "opted_out",
    "queue",
    "remove_opt_out",
    "send_batch_job",
    "send_bulk_sms",
    "send_code",
    "send_job",
    "send_sms",
    "send_whatsapp",
    "shown_body",
]
