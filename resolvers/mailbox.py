"""Invoices from a mailbox: every configured IMAP mailbox is read by a periodic job, and
the PDFs of its unseen messages become `ReceivedDocument` rows of the mailbox's tenant.

Which mailboxes: each organization's own (an `imap` tenant credential in the vault: host,
port, user, password, security; the host goes through the outbound guard when saved and
again before every connection, which dials the checked address), and the system mailbox
from the `IMAP_*` settings, whose mail is for the one organization named by `IMAP_TENANT`
(its slug). A system mailbox is not a fallback for the others: an organization without
its own reads nothing. Each mailbox is read at most every `IMAP_POLL_SECONDS`
(`MailboxState` keeps when), mailboxes side by side, each failure its own.

Reading one message (`ingest`), in this order:

1. a message already recorded for (mailbox, UIDVALIDITY, UID) is only marked seen (its
   rows were committed but the flag was lost);
2. its size first: one over `MAX_MESSAGE_FACTOR` × `IMAP_MAX_ATTACHMENT_BYTES` is not
   downloaded and is recorded FAILED;
3. otherwise it is read with `BODY.PEEK[]` (still unseen) and parsed by the standard
   library; every attachment whose bytes start with `%PDF-` is a document (whatever its
   claimed type) unless it is larger than `IMAP_MAX_ATTACHMENT_BYTES`; a part claiming to
   be a PDF that is not one, an oversized PDF, or a message whose MIME structure is broken
   makes the message FAILED, with the reason in its `error` and in the integration error
   log (`integrationErrors`, provider IMAP), and the rest of the mailbox goes on;
4. its rows (the message, its new documents — the same PDF already held by the tenant is
   not a new one — and their bytes) are committed in one transaction;
5. only then is it marked `\\Seen` on the server. A poll that dies between 4 and 5 leaves
   it unseen, and the next poll takes step 1.

A mailbox whose login fails, whose host is refused or unreachable, is reported in the
error log and on its `MailboxState`; the other mailboxes are read all the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import ssl
import unicodedata
from dataclasses import dataclass, field
from email import policy
from email.errors import (
    CloseBoundaryNotFoundDefect,
    MessageDefect,
    MultipartInvariantViolationDefect,
    NoBoundaryInMultipartDefect,
    StartBoundaryNotFoundDefect,
)
from email.message import Message
from email.parser import BytesParser
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from kit.logging import scrub
from kit.settings import Settings
from kit.ssrf import UnsafeDestination, check_host
from kit.text import header_safe
from kit.vault import VaultError, vault_for
from models.credentials import TENANT_SLOT, Credential
from models.integrations import IntegrationError
from models.mailbox import (
    MailboxState,
    MessageStatus,
    ReceivedDocument,
    ReceivedDocumentContent,
    ReceivedMessage,
)
from models.tenancy import scoped
from models.tenants import Tenant
from providers import imap
from providers.errors import ProviderError
from resolvers import inbox, invoices
from resolvers.context import Context
from resolvers.credentials import CredentialSource, IntegrationProvider
from resolvers.jobs import JobContext, periodic
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

log = logging.getLogger("switchboard.mailbox")

POLL_TICK = dt.timedelta(seconds=15)  # the periodic job's period; IMAP_POLL_SECONDS above it
MAX_MESSAGE_FACTOR = 4  # a message may be this many times the largest PDF (base64, parts)
PARALLEL_MAILBOXES = 8
MAX_ERROR = 1000
PDF_MAGIC = b"%PDF-"
# MIME defects after which the parts cannot be trusted to be what the sender meant.
_BROKEN = (
    StartBoundaryNotFoundDefect,
    CloseBoundaryNotFoundDefect,
    MultipartInvariantViolationDefect,
    NoBoundaryInMultipartDefect,
)
_PDF_TYPES = frozenset({"application/pdf", "application/x-pdf", "application/acrobat"})
_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,]")


@dataclass(frozen=True)
class Mailbox:
    """One mailbox to read, and for whom."""

    tenant_id: int
    source: CredentialSource  # SYSTEM (settings) or TENANT (the vault)
    config: imap.ImapConfig
    guarded: bool  # the host is a tenant's choice: the outbound guard decides where to dial

    @property
    def key(self) -> str:
        c = self.config
        return f"imap://{c.user}@{c.host.lower()}:{c.port}"[:255]


@dataclass
class PollReport:
    """What one poll of one mailbox did (for logs and tests)."""

    mailbox: str
    tenant_id: int
    messages: int = 0
    documents: int = 0
    failed: int = 0
    error: str | None = None


# -- which mailboxes ----------------------------------------------------------------------


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.imap_ca_file:  # a private CA's (or a self-signed) certificate
        return ssl.create_default_context(cafile=settings.imap_ca_file)
    return None


async def system_mailbox(settings: Settings) -> Mailbox | None:
    """The `IMAP_*` mailbox and the organization (`IMAP_TENANT`) it reads for."""
    if not settings.imap_host:
        return None
    tenant = await Tenant.get_or_none(slug=settings.imap_tenant)
    if tenant is None:
        log.error("IMAP_TENANT names no organization; the system mailbox is not read")
        return None
    config = imap.ImapConfig(
        host=settings.imap_host,
        port=settings.imap_port,
        user=settings.imap_user,
        password=settings.imap_password.get_secret_value() if settings.imap_password else "",
        security=settings.imap_security,
        timeout=settings.imap_timeout_seconds,
        tls_context=_tls_context(settings),
    )
    return Mailbox(tenant.id, CredentialSource.SYSTEM, config, guarded=False)


async def tenant_mailboxes(settings: Settings) -> list[Mailbox]:
    """Every organization's own mailbox (its `imap` credential). One that cannot be
    decrypted is reported to its tenant and skipped."""
    vault = vault_for(settings.vault_keys)
    found: list[Mailbox] = []
    rows = await Credential.filter(provider=IntegrationProvider.IMAP.value, slot=TENANT_SLOT)
    for row in rows:
        try:
            values = json.loads(vault.decrypt(row.ciphertext))
        except (VaultError, ValueError):
            await _report(row.tenant_id, "poll", "the stored imap credential cannot be read")
            continue
        security = values.get("security") or "tls"
        config = imap.ImapConfig(
            host=str(values.get("host", "")),
            port=int(values.get("port") or imap.DEFAULT_PORT),
            user=str(values.get("user", "")),
            password=str(values.get("password", "")),
            security=security if security in ("tls", "starttls", "none") else "tls",  # type: ignore[arg-type]
            timeout=settings.imap_timeout_seconds,
            tls_context=_tls_context(settings),
        )
        found.append(Mailbox(row.tenant_id, CredentialSource.TENANT, config, guarded=True))
    return found


# -- polling ------------------------------------------------------------------------------


@periodic("mailbox.poll", every=POLL_TICK)
async def poll_job(job: JobContext, payload: dict[str, Any]) -> None:
    if job.settings is None:
        raise RuntimeError("mailbox polls need the process's settings (gateway/worker.py)")
    await poll_all(job.settings)


async def poll_all(settings: Settings, *, due_only: bool = True) -> list[PollReport]:
    """Read every configured mailbox that is due (all of them with `due_only=False`),
    side by side; one mailbox's failure never stops another's."""
    boxes = await tenant_mailboxes(settings)
    system = await system_mailbox(settings)
    if system is not None:
        boxes.insert(0, system)
    if due_only:
        boxes = [box for box in boxes if await _due(box, settings)]
    gate = asyncio.Semaphore(PARALLEL_MAILBOXES)

    async def one(box: Mailbox) -> PollReport:
        async with gate:
            return await poll_mailbox(settings, box)

    return list(await asyncio.gather(*(one(box) for box in boxes)))


async def _due(box: Mailbox, settings: Settings) -> bool:
    state = await scoped(MailboxState, box.tenant_id).filter(mailbox=box.key).first()
    if state is None or state.last_polled_at is None:
        return True
    age = dt.datetime.now(dt.UTC) - state.last_polled_at
    # A little early rather than a whole tick late: the job runs every POLL_TICK.
    return age.total_seconds() >= settings.imap_poll_seconds - 1


async def poll_mailbox(settings: Settings, box: Mailbox) -> PollReport:
    """Read one mailbox's unseen messages (see the module docstring)."""
    report = PollReport(box.key, box.tenant_id)
    uidvalidity: int | None = None
    try:
        config = await _dialable(settings, box)
        async with imap.open_inbox(config) as inbox:
            uidvalidity = inbox.uidvalidity
            for uid in await inbox.unseen():
                outcome = await _read_one(settings, box, inbox, uid)
                report.messages += 1
                report.documents += outcome.documents
                report.failed += outcome.status is MessageStatus.FAILED
    except ProviderError as err:
        report.error = scrub(str(err))[:MAX_ERROR]
        await _report(
            box.tenant_id,
            err.operation,
            report.error,
            code=err.vendor_code,
            source=box.source,
        )
        log.warning(
            "mailbox poll failed",
            extra={"tenant_id": box.tenant_id, "operation": err.operation},
        )
    await _record_state(box, report, uidvalidity)
    return report


async def _dialable(settings: Settings, box: Mailbox) -> imap.ImapConfig:
    """The config to connect with: a tenant's host goes through the outbound guard, and
    the connection dials the address it checked."""
    if not box.guarded:
        return box.config
    try:
        [address, *_] = await check_host(
            box.config.host, box.config.port, settings.outbound_policy()
        )
    except UnsafeDestination as exc:
        raise ProviderError(
            imap.PROVIDER,
            "connect",
            vendor_code="unsafe_destination",
            message=f"the mailbox host is refused by the outbound guard: {exc.message}",
        ) from None
    return imap.ImapConfig(**{**box.config.__dict__, "dial": address})


@dataclass
class Outcome:
    status: MessageStatus
    documents: int = 0


async def _read_one(settings: Settings, box: Mailbox, inbox: imap.Inbox, uid: int) -> Outcome:
    known = await (
        scoped(ReceivedMessage, box.tenant_id)
        .filter(mailbox=box.key, uidvalidity=inbox.uidvalidity, uid=uid)
        .first()
    )
    if known is not None:  # committed by an earlier poll that did not get to flag it
        await inbox.mark_seen(uid)
        return Outcome(MessageStatus(known.status))
    limit = settings.imap_max_attachment_bytes * MAX_MESSAGE_FACTOR
    size = await inbox.size(uid)
    if size is None:
        return Outcome(MessageStatus.RECEIVED)  # expunged meanwhile
    if size > limit:
        parsed = Parsed(errors=[f"the message is {size} bytes, over the limit of {limit}"])
    else:
        raw = await inbox.fetch(uid)
        if raw is None:
            return Outcome(MessageStatus.RECEIVED)
        parsed = parse(raw, max_bytes=settings.imap_max_attachment_bytes)
    parsed.size = size
    outcome = await store(box, inbox.uidvalidity, uid, parsed)
    await inbox.mark_seen(uid)  # after the commit, never before
    return outcome


# -- parsing ------------------------------------------------------------------------------


@dataclass
class Attachment:
    filename: str
    content_type: str
    content: bytes
    sha256: str


@dataclass
class Parsed:
    message_id: str = ""
    sender: str = ""
    subject: str = ""
    recipient: str = ""
    in_reply_to: list[str] = field(default_factory=list)  # In-Reply-To and References
    text: str = ""  # the plain-text body, for a reply that lands in the support inbox
    size: int = 0
    pdfs: list[Attachment] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse(raw: bytes, *, max_bytes: int) -> Parsed:
    """A message's headers (made safe) and PDFs, and what was wrong with it."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        result = Parsed(
            message_id=_header(message, "Message-ID", 255),
            sender=_header(message, "From", 320),
            subject=_header(message, "Subject", 300),
            recipient=_header(message, "To", 320),
            in_reply_to=_MESSAGE_IDS.findall(
                f"{_header(message, 'In-Reply-To', 2000)} {_header(message, 'References', 8000)}"
            )[:20],
        )
        broken = [d for d in _defects(message) if isinstance(d, _BROKEN)]
        if broken:
            result.errors.append(f"the MIME structure is broken: {type(broken[0]).__name__}")
            return result
        for index, part in enumerate(message.walk()):
            if part.is_multipart():
                continue
            _take(part, index, result, max_bytes)
        if result.in_reply_to:
            result.text = _plain_text(message)
    except Exception as exc:  # the parser and header classes raise many things on junk
        return Parsed(errors=[f"the message cannot be parsed: {type(exc).__name__}"])
    return result


_MESSAGE_IDS = re.compile(r"<[^<>\s]{1,250}>")
MAX_REPLY_CHARS = 20_000


def _plain_text(message: Message) -> str:
    """The message's plain-text body (made storable), for the support inbox."""
    body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    if body is None:
        return ""
    try:
        text = str(body.get_content())
    except Exception:  # an undecodable charset: nothing to show
        return ""
    return text.replace("\x00", "\ufffd")[:MAX_REPLY_CHARS]


def _defects(message: Message) -> list[MessageDefect]:
    found: list[MessageDefect] = []
    for part in message.walk():
        found.extend(part.defects)
    return found


def _take(part: Message, index: int, result: Parsed, max_bytes: int) -> None:
    claimed = part.get_content_type().lower()
    attached = part.get_content_disposition() is not None or bool(part.get_filename())
    if not attached and claimed not in _PDF_TYPES:
        return  # a body part, not an attachment
    content = part.get_payload(decode=True)
    if not isinstance(content, bytes):
        return
    raw_name = _filename(part)
    name = safe_filename(raw_name, index)
    if not content.startswith(PDF_MAGIC):
        if claimed in _PDF_TYPES or raw_name.lower().rstrip(". ").endswith(".pdf"):
            result.errors.append(f"{name}: claims to be a PDF but its content is not one")
        return  # other attachments (images, signatures) are not invoices
    if len(content) > max_bytes:
        result.errors.append(f"{name}: {len(content)} bytes, over the limit of {max_bytes}")
        return
    digest = hashlib.sha256(content).hexdigest()
    if any(a.sha256 == digest for a in result.pdfs):
        return  # the same file twice in one message
    result.pdfs.append(Attachment(name, "application/pdf", content, digest))


def _filename(part: Message) -> str:
    try:
        return part.get_filename() or ""
    except Exception:  # a malformed RFC 2231 parameter
        return ""


def _header(message: Message, name: str, limit: int) -> str:
    try:
        value = message.get(name)
        text = "" if value is None else str(value)
    except Exception:  # a header the policy cannot fold into a value
        return ""
    return header_safe(text)[:limit]


def safe_filename(raw: str, index: int) -> str:
    """A name that is only a name: no directories, no control characters or NULs, no
    leading dots, at most 200 characters, ending in `.pdf`."""
    name = unicodedata.normalize("NFKC", header_safe(raw))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    stem = name[:-4] if name.lower().endswith(".pdf") else name
    stem = stem.strip(" .")[:196] or f"attachment-{index}"
    return f"{stem}.pdf"


# -- storing ------------------------------------------------------------------------------


async def store(box: Mailbox, uidvalidity: int, uid: int, parsed: Parsed) -> Outcome:
    """Commit the message and its new documents in one transaction; a concurrent poll
    that committed the same message or the same PDF first wins, and this one agrees."""
    status = MessageStatus.FAILED if parsed.errors else MessageStatus.RECEIVED
    error = "; ".join(parsed.errors)[:MAX_ERROR] or None
    for attempt in range(2):
        try:
            async with in_transaction() as conn:
                message = await ReceivedMessage.create(
                    tenant_id=box.tenant_id,
                    mailbox=box.key,
                    uidvalidity=uidvalidity,
                    uid=uid,
                    message_id=parsed.message_id,
                    sender=parsed.sender,
                    subject=parsed.subject,
                    size=parsed.size,
                    status=status.value,
                    error=error,
                    using_db=conn,
                )
                # A reply to one of the organization's own mails: to its support inbox.
                await inbox.file_email_reply(
                    box.tenant_id,
                    sender=parsed.sender,
                    recipient=parsed.recipient,
                    subject=parsed.subject,
                    text=parsed.text,
                    message_id=parsed.message_id,
                    in_reply_to=parsed.in_reply_to,
                    connection=conn,
                )
                added = 0
                held = set(
                    await scoped(ReceivedDocument, box.tenant_id)
                    .filter(sha256__in=[a.sha256 for a in parsed.pdfs])
                    .using_db(conn)
                    .values_list("sha256", flat=True)
                )
                for pdf in parsed.pdfs:
                    if pdf.sha256 in held:
                        continue
                    document = await ReceivedDocument.create(
                        tenant_id=box.tenant_id,
                        source_message_id=message.id,
                        message_id=parsed.message_id,
                        filename=pdf.filename,
                        content_type=pdf.content_type,
                        size=len(pdf.content),
                        sha256=pdf.sha256,
                        sender=parsed.sender,
                        subject=parsed.subject,
                        received_at=dt.datetime.now(dt.UTC),
                        using_db=conn,
                    )
                    await ReceivedDocumentContent.create(
                        tenant_id=box.tenant_id,
                        document_id=document.id,
                        content=pdf.content,
                        using_db=conn,
                    )
                    # Handed to the invoice pipeline in the same transaction.
                    await invoices.create_from_document(document, connection=conn)
                    added += 1
                if added:
                    message.documents = added
                    await message.save(update_fields=["documents"], using_db=conn)
        except IntegrityError:
            known = await (
                scoped(ReceivedMessage, box.tenant_id)
                .filter(mailbox=box.key, uidvalidity=uidvalidity, uid=uid)
                .first()
            )
            if known is not None:  # another poll recorded this very message
                return Outcome(MessageStatus(known.status))
            if attempt:
                raise
            continue  # another message brought the same PDF meanwhile: count it as held
        if error:
            await _report(box.tenant_id, "read_message", f"UID {uid}: {error}", source=box.source)
        return Outcome(status, added)
    raise AssertionError("unreachable")


async def _report(
    tenant_id: int,
    operation_name: str,
    message: str,
    *,
    code: str | None = None,
    source: CredentialSource | None = None,
) -> None:
    """A row in the tenant's integration error log (`integrationErrors`, provider IMAP)."""
    await IntegrationError.create(
        tenant_id=tenant_id,
        provider=IntegrationProvider.IMAP.value,
        operation=f"mailbox.{operation_name}"[:120],
        status=None,
        vendor_code=code[:120] if code else None,
        message=scrub(message)[:MAX_ERROR],
        credential_source=source.value if source is not None else None,
    )


async def _record_state(box: Mailbox, report: PollReport, uidvalidity: int | None) -> None:
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        "source": box.source.value,
        "last_polled_at": now,
        "last_error": report.error,
    }
    if report.error is None:
        values["last_success_at"] = now
        values["uidvalidity"] = uidvalidity
    updated = await scoped(MailboxState, box.tenant_id).filter(mailbox=box.key).update(**values)
    if not updated:
        try:
            await MailboxState.create(tenant_id=box.tenant_id, mailbox=box.key, **values)
        except IntegrityError:  # a concurrent poll made it first
            await scoped(MailboxState, box.tenant_id).filter(mailbox=box.key).update(**values)


# -- reading ------------------------------------------------------------------------------


@operation("mailbox:read")
async def list_received_documents(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[ReceivedDocument]:
    """The organization's documents from its mailboxes, newest first."""
    principal = ctx.require("mailbox:read")
    return await page_of(
        ctx, scoped(ReceivedDocument, principal.tenant_id), first=first, after=after
    )


@operation("mailbox:read")
async def list_mailboxes(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[MailboxState]:
    """The organization's mailboxes that have been read, with how the last read went."""
    principal = ctx.require("mailbox:read")
    return await page_of(ctx, scoped(MailboxState, principal.tenant_id), first=first, after=after)
