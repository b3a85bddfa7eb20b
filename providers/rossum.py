"""Rossum (https://rossum.app/api/docs): invoice OCR over its REST API (Elis API v1).

No SDK: Rossum's Python library is synchronous, so the client speaks the documented API
on the shared layer (providers.http), base URL `https://elis.rossum.ai/api/v1` (or an
organization's own `https://<domain>.rossum.app/api/v1`):

- **Auth**: `POST /auth/login {"username", "password"}` → `{"key"}`, then
  `Authorization: Bearer <key>` on every call; a static API token is used as it is. A
  login token is kept (`TokenCache`, one per process in the registry) until it expires
  or Rossum refuses it (401); then it is renewed once for every concurrent caller (one
  login, the others wait for it) and the refused call made again, once.
- **Upload**: `POST /uploads?queue=<id>` (multipart field `content`), the upload API
  Rossum documents today (the older `POST /queues/{id}/upload` is its predecessor): it
  answers `{"url": ".../tasks/<id>"}`; the task (`GET /tasks/{id}`) says `running`,
  `succeeded` (its `content.upload` names the upload, `GET /uploads/{id}` lists its
  `annotations`) or `failed`. `submit()` does the three steps.
- **Status**: `GET /annotations/{id}` → `status` (importing → to_review → reviewing →
  confirmed → exporting → exported; failed_import, failed_export, postponed, deleted,
  rejected…) and `messages`.
- **Content**: `GET /annotations/{id}/content` → the datapoint tree, mapped to
  `ExtractedInvoice` by `providers.rossum_fields.extract_invoice`.

Retries: GETs are retried by the layer (idempotent). An upload has no idempotency key in
Rossum's API, so it is never retried once it may have reached Rossum (a second try could
make a second annotation): only a connection that never opened and a 429 are tried again.
The caller that gets a 503 from an upload may submit again knowingly (nothing was made).
A login is not retried either; a failed one fails the call.

Errors are Django REST framework's `{"detail": "...", "code": "..."}` (or a field → list
of messages map for 400s): `parse_error` keeps the code and the text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP, ProviderResponse, Timeouts
from providers.retry import RetryPolicy
from providers.rossum_fields import ExtractedInvoice, LineItem, extract_invoice
from providers.tokens import Issued, TokenCache

__all__ = [
    "API_URL",
    "CONFIG",
    "PROVIDER",
    "Annotation",
    "ExtractedInvoice",
    "LineItem",
    "RossumClient",
    "RossumCredential",
    "Submitted",
    "TokenCache",
    "UploadTask",
    "extract_invoice",
    "verify_key",
]

PROVIDER = "rossum"
API_URL = "https://elis.rossum.ai/api/v1"

CONFIG = ProviderConfig(
    name=PROVIDER,
    # An upload carries up to 16 MB (the product's PDF limit): a longer total than mail's.
    timeouts=Timeouts(connect=5.0, read=30.0, total=60.0),
    pool_size=20,
    concurrency=20,
    # Rossum does not publish a per-token limit we could rely on: this keeps a burst of
    # status polls polite (override with OUTBOUND_RATE_LIMITS).
    rate_limit="10/second",
    rate_limit_max_wait=2.0,
    retry=RetryPolicy(max_attempts=4, base=0.5, cap=8.0, budget=60.0),
)
VERIFY_TIMEOUTS = Timeouts(connect=3.0, read=5.0, total=5.0)
# What we ask a login token to live (Rossum's default is 162 hours), and how long we use
# it: an hour less, so a token is never used in its last minutes.
TOKEN_LIFETIME = 24 * 3600

# Annotation statuses (Rossum's words).
IMPORTING = "importing"
FAILED_IMPORT = "failed_import"
TO_REVIEW = "to_review"
REVIEWING = "reviewing"
CONFIRMED = "confirmed"
EXPORTING = "exporting"
EXPORTED = "exported"
FAILED_EXPORT = "failed_export"
# Where an annotation's fields are final (exported, or confirmed and on its way out).
DONE_STATUSES = frozenset({CONFIRMED, EXPORTING, EXPORTED})
# Where no further change comes without a person.
FAILED_STATUSES = frozenset({FAILED_IMPORT, FAILED_EXPORT, "deleted", "purged", "rejected"})


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """DRF's error bodies: `{"detail", "code"}`, or `{"field": ["message", …]}` for 400s."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if "detail" in data:
            code = data.get("code")
            return (str(code) if code else None), str(data.get("detail") or "")
        parts = []
        for name, messages in list(data.items())[:10]:
            text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            parts.append(f"{name}: {text}")
        first = next(iter(data), None)
        return (str(first) if first else None), "; ".join(parts)
    return None, body.decode("utf-8", "replace")[:500] if body else ""


def id_of(url_or_id: Any) -> str:
    """`https://…/annotations/314` or `314` → `"314"` (Rossum links objects by URL)."""
    text = str(url_or_id or "").rstrip("/")
    return urlsplit(text).path.rsplit("/", 1)[-1] if "/" in text else text


@dataclass(frozen=True, slots=True)
class RossumCredential:
    """What a Rossum call needs: a static token, or a login; the queue; the base URL."""

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    queue_id: str | None = None
    base_url: str = API_URL

    @classmethod
    def of(cls, secrets_: Mapping[str, str], base_url: str | None = None) -> RossumCredential:
        """From a stored or configured credential's fields (`api_token`, or `username` and
        `password`; `queue_id`, `base_url`), as the credential chain resolved them."""
        return cls(
            token=secrets_.get("api_token") or None,
            username=secrets_.get("username") or None,
            password=secrets_.get("password") or None,
            queue_id=secrets_.get("queue_id") or None,
            base_url=(base_url or secrets_.get("base_url") or API_URL).rstrip("/"),
        )

    @property
    def can_login(self) -> bool:
        return bool(self.username and self.password)

    @property
    def secret(self) -> str:
        """The stable secret the layer keys this credential's breaker and budget on (a
        login token changes; the password or the static token does not)."""
        return self.token or f"{self.username}\x00{self.password}"

    def cache_key(self) -> str:
        raw = f"{self.base_url}\x00{self.username}\x00{self.password}"
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UploadTask:
    id: str
    status: str  # running | succeeded | failed
    upload_id: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class Submitted:
    """A document handed to Rossum: its annotation is what to follow."""

    annotation_id: str
    document_id: str | None
    upload_id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class Annotation:
    id: str
    status: str
    document_id: str | None
    queue_id: str | None
    modified_at: str | None
    messages: list[str]  # Rossum's messages (why an import failed…)

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Annotation:
        messages = [
            str(m.get("content") or "")
            for m in data.get("messages") or []
            if isinstance(m, Mapping) and m.get("content")
        ]
        return cls(
            id=str(data.get("id") or id_of(data.get("url"))),
            status=str(data.get("status") or ""),
            document_id=id_of(data["document"]) if data.get("document") else None,
            queue_id=id_of(data["queue"]) if data.get("queue") else None,
            modified_at=data.get("modified_at"),
            messages=messages,
        )


def _multipart(name: str, filename: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    """One file field as multipart/form-data (the layer sends bytes, so a retry of a call
    that may be retried sends exactly the same body)."""
    boundary = "switchboard" + secrets.token_hex(12)
    safe_name = quote(filename, safe=" ._-()")  # no quote or CRLF can break the header
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{name}"; filename="{safe_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    body = head + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class RossumClient:
    """One credential's view of Rossum. Cheap to build per call: the session (`http`) and
    the login tokens (`tokens`, `ProviderRegistry.rossum_tokens()`) are shared."""

    def __init__(
        self,
        http: ProviderHTTP,
        tokens: TokenCache,
        credential: RossumCredential,
        *,
        labels: Mapping[str, str] | None = None,
        own_credential: bool = False,
        guard_url: bool = False,
    ) -> None:
        if not credential.token and not credential.can_login:
            raise ValueError("a Rossum credential needs an API token or a username and password")
        self.http = http
        self.tokens = tokens
        self.credential = credential
        self.base_url = credential.base_url.rstrip("/")
        self.labels = dict(labels or {})
        self.own_credential = own_credential
        self.guard_url = guard_url

    def __repr__(self) -> str:  # never a secret
        return f"RossumClient(base_url={self.base_url!r})"

    # Auth -------------------------------------------------------------------------------

    async def login(self) -> str:
        """A new token for the credential's user (`POST /auth/login`)."""
        cred = self.credential
        response = await self.http.request(
            "POST",
            f"{self.base_url}/auth/login",
            operation="login",
            credential=cred.secret,
            headers={"Accept": "application/json"},
            json={
                "username": cred.username,
                "password": cred.password,
                "max_token_lifetime_s": TOKEN_LIFETIME,
            },
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )
        data = response.json()
        key = data.get("key") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise ProviderError(
                PROVIDER, "login", status=response.status, vendor_code="no_key",
                message="login answered without a key", retryable=False,
            )  # fmt: skip
        return key

    async def _token(self, refused: str | None = None) -> str:
        if self.credential.token:
            return self.credential.token

        async def issue() -> Issued:
            return Issued(await self.login(), TOKEN_LIFETIME)

        return await self.tokens.token(self.credential.cache_key(), issue, refused=refused)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        timeouts: Timeouts | None = None,
        **kwargs: Any,
    ) -> ProviderResponse:
        """One API call with the live token; a 401 on a login token renews it (once for
        every concurrent caller) and makes the call again, once."""
        token = await self._token()
        try:
            return await self._send(method, path, token, operation, timeouts, kwargs)
        except ProviderError as err:
            if err.status != 401 or not self.credential.can_login or self.credential.token:
                raise
        token = await self._token(refused=token)
        return await self._send(method, path, token, operation, timeouts, kwargs)

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        operation: str,
        timeouts: Timeouts | None,
        kwargs: dict[str, Any],
    ) -> ProviderResponse:
        extra = dict(kwargs)  # the same arguments serve the call made again after a 401
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        headers.update(extra.pop("headers", None) or {})
        return await self.http.request(
            method,
            f"{self.base_url}{path}",
            operation=operation,
            credential=self.credential.secret,
            headers=headers,
            timeouts=timeouts,
            parse_error=parse_error,
            labels=self.labels,
            own_credential=self.own_credential,
            guard_url=self.guard_url,
            **extra,
        )

    # Calls ------------------------------------------------------------------------------

    async def current_user(
        self, *, operation: str = "current_user", timeouts: Timeouts | None = None
    ) -> dict[str, Any]:
        """`GET /auth/user`: the user the token belongs to."""
        response = await self._call("GET", "/auth/user", operation=operation, timeouts=timeouts)
        data = response.json()
        return data if isinstance(data, dict) else {}

    async def upload(
        self,
        content: bytes,
        filename: str,
        *,
        queue_id: str | None = None,
        content_type: str = "application/pdf",
    ) -> UploadTask:
        """Start importing one document into the queue (`POST /uploads?queue=`). Never
        retried once it may have reached Rossum (see the module docstring)."""
        queue = queue_id or self.credential.queue_id
        if not queue:
            raise ValueError("no Rossum queue: set ROSSUM_QUEUE_ID or the credential's queueId")
        body, multipart_type = _multipart("content", filename, content, content_type)
        response = await self._call(
            "POST",
            "/uploads",
            operation="upload",
            params={"queue": str(queue)},
            data=body,
            headers={"Content-Type": multipart_type},
        )
        data = response.json()
        url = data.get("url") if isinstance(data, dict) else None
        if not url:
            raise ProviderError(
                PROVIDER, "upload", status=response.status, vendor_code="no_task",
                message="upload answered without a task", retryable=False,
            )  # fmt: skip
        return UploadTask(id=id_of(url), status="running", upload_id=None, detail=None)

    async def get_task(self, task_id: str) -> UploadTask:
        response = await self._call("GET", f"/tasks/{quote(task_id, safe='')}", operation="task")
        data = response.json() or {}
        content = data.get("content") if isinstance(data.get("content"), dict) else {}
        upload = (content or {}).get("upload") or data.get("result_url")
        return UploadTask(
            id=str(data.get("id") or task_id),
            status=str(data.get("status") or ""),
            upload_id=id_of(upload) if upload else None,
            detail=str(data["detail"]) if data.get("detail") else None,
        )

    async def get_upload_annotations(self, upload_id: str) -> list[str]:
        """The ids of the annotations an upload created."""
        response = await self._call(
            "GET", f"/uploads/{quote(upload_id, safe='')}", operation="get_upload"
        )
        data = response.json() or {}
        return [id_of(url) for url in data.get("annotations") or []]

    async def submit(
        self,
        content: bytes,
        filename: str,
        *,
        queue_id: str | None = None,
        content_type: str = "application/pdf",
        wait: float = 30.0,
        poll: float = 0.25,
    ) -> Submitted:
        """Upload one document and follow its task to the annotation it created (the
        task ends within seconds: it only makes the document and annotation, the
        extraction then runs on the annotation). Raises ProviderError when the task
        failed, or when it did not end within `wait` seconds (`vendor_code` `task_pending`,
        retryable: the upload was made, follow `task_id` later rather than upload again)."""
        task = await self.upload(content, filename, queue_id=queue_id, content_type=content_type)
        deadline = time.monotonic() + wait
        while True:
            task = await self.get_task(task.id)
            if task.status == "succeeded" and task.upload_id:
                break
            if task.status == "failed":
                raise ProviderError(
                    PROVIDER, "upload", vendor_code="task_failed",
                    message=task.detail or "the upload task failed", retryable=False,
                )  # fmt: skip
            if time.monotonic() >= deadline:
                raise ProviderError(
                    PROVIDER, "upload", vendor_code="task_pending",
                    message=f"upload task {task.id} still running", retryable=True,
                )  # fmt: skip
            await asyncio.sleep(poll)
        annotations = await self.get_upload_annotations(task.upload_id)
        if not annotations:
            raise ProviderError(
                PROVIDER, "upload", vendor_code="no_annotation",
                message="the upload created no annotation", retryable=False,
            )  # fmt: skip
        annotation = await self.get_annotation(annotations[0])
        return Submitted(annotations[0], annotation.document_id, task.upload_id, task.id)

    async def get_annotation(self, annotation_id: str) -> Annotation:
        response = await self._call(
            "GET", f"/annotations/{quote(annotation_id, safe='')}", operation="get_annotation"
        )
        return Annotation.from_api(response.json() or {})

    async def get_content(self, annotation_id: str) -> list[Any]:
        """The annotation's datapoint tree (`GET /annotations/{id}/content`)."""
        response = await self._call(
            "GET",
            f"/annotations/{quote(annotation_id, safe='')}/content",
            operation="get_content",
        )
        data = response.json()
        content = data.get("content") if isinstance(data, dict) else data
        return content if isinstance(content, list) else []

    async def extract(self, annotation_id: str) -> ExtractedInvoice:
        """The annotation's fields as an `ExtractedInvoice` (values that do not parse are
        None)."""
        return extract_invoice(await self.get_content(annotation_id))


async def verify_key(client: RossumClient) -> None:
    """Rossum's cheap authenticated call: `GET /auth/user` (after a login, for a username
    and password). Raises ProviderError when the credential was not accepted."""
    await client.current_user(operation="verify_credential", timeouts=VERIFY_TIMEOUTS)
