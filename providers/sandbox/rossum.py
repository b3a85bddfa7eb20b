"""Rossum sandbox: the Elis API v1 paths the client uses, as Rossum serves them.

- **Auth**: `POST /auth/login {"username", "password"}` → `{"key", "domain"}` (a password
  containing `invalid` → 401 `authentication_failed`); `POST /auth/logout` ends the
  token; `GET /auth/user`. Calls take `Authorization: Bearer <key>` or `token <key>`.
  A token this sandbox issued is refused (401) once logged out or older than
  `token_ttl` seconds; any other token is a static API token, accepted unless it
  contains `invalid` (as the other sandboxes take any key).
- **Upload**: `POST /uploads?queue=<id>` with the file in multipart field `content`
  (or as the raw body) → 202 `{"url": ".../tasks/<id>"}`; `GET /tasks/{id}` (succeeded at
  once: the document and annotation exist), `GET /uploads/{id}` (`documents`,
  `annotations`), `GET /documents/{id}`. Any numeric queue id is a queue.
- **Annotation** (`GET /annotations/{id}`): `importing`, then, `step_seconds` apart,
  `to_review` → `confirmed` → `exporting` → `exported` (Rossum's automation confirming
  it). The fields come from the PDF's own text (providers/sandbox/rossum_text.py has the
  convention); a file whose text cannot be read goes to `failed_import` with the reason in
  `messages`; a document saying `Review: required` stops at `to_review` until
  `POST /annotations/{id}/confirm`. `GET /annotations/{id}/content` → `{"content": [...]}`,
  `GET /queues/{id}/export?format=json&id=<ids>` → `{"results": [...]}`.
- **Hooks** (`configure_hooks(url, secret)`; the gateway points them at its own
  `/webhooks/rossum`): every status change is POSTed in Rossum's hook shape
  `{"request_id", "timestamp", "hook", "action": "changed", "event": "annotation_status",
  "annotation": {…, "status", "previous_status"}, "document": {…}, "settings": {}}`,
  signed `X-Rossum-Signature-SHA256: sha256=<hex HMAC-SHA256(secret, body)>` (and the
  legacy `X-Elis-Signature: sha1=<hex>`), from a background task. Rossum also puts a
  short-lived `rossum_authorization_token` in the payload; this sandbox does not, since
  the receiver stores payloads and a token has no business in the store.
- **Errors** are DRF's `{"detail", "code"}`. Faults, recording and stats come from
  providers/sandbox/base.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import Sandbox, mounted_url
from providers.sandbox.callbacks import CallbackRequest
from providers.sandbox.rossum_text import Unreadable, content_tree, pdf_text, read_fields

PROVIDER = "rossum"
MAX_ANNOTATIONS = 5000
MAX_UPLOAD_BYTES = 40 * 1024 * 1024  # Rossum's documented upload limit
SIGNATURE_HEADER = "X-Rossum-Signature-SHA256"
LEGACY_SIGNATURE_HEADER = "X-Elis-Signature"
# The automated path of an annotation after its import (Rossum's automation confirming).
WALK = ("to_review", "confirmed", "exporting", "exported")

_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid", "Invalid request."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("request_too_large", "Request too large."),
    429: ("throttled", "Request was throttled."),
    500: ("error", "A server error occurred."),
    502: ("error", "Bad gateway."),
    503: ("error", "Service temporarily unavailable."),
    504: ("error", "Gateway timeout."),
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sign_body(secret: str, body: bytes) -> dict[str, str]:
    """Rossum's hook signature headers for `body` (the secret as UTF-8)."""
    key = secret.encode()
    return {
        SIGNATURE_HEADER: "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        LEGACY_SIGNATURE_HEADER: "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
    }


class RossumSandbox(Sandbox):
    provider = PROVIDER

    def __init__(self) -> None:
        self.step_seconds = 0.05  # between two states of an annotation's walk
        self.token_ttl = 162 * 3600.0  # Rossum's default token lifetime
        self.hook_secret: str | None = None
        self.tokens: dict[str, float] = {}  # issued token -> issued at
        self.logged_out: set[str] = set()
        self.logins = 0
        self.annotations: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.documents: dict[int, dict[str, Any]] = {}
        self.contents: dict[int, list[dict[str, Any]]] = {}
        self.uploads: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1000)
        self._walks: set[asyncio.Task[None]] = set()
        self._review: dict[int, asyncio.Event] = {}
        super().__init__()

    def configure_hooks(
        self, url: str | None, secret: str | None, *, step_seconds: float | None = None
    ) -> None:
        """POST signed hook calls to `url` on every status change (None: post nothing)."""
        if url is not None and not secret:
            raise ValueError("Rossum hooks need a secret to sign with")
        self.hook_secret = secret if url else None
        self.callbacks.configure(url, delay=0.0)
        if step_seconds is not None:
            self.step_seconds = max(0.0, step_seconds)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/auth/login", self.login, methods=["POST"]),
            Route("/auth/logout", self.logout, methods=["POST"]),
            Route("/auth/user", self.user, methods=["GET"]),
            Route("/uploads", self.create_upload, methods=["POST"]),
            Route("/uploads/{upload_id:int}", self.get_upload, methods=["GET"]),
            Route("/tasks/{task_id:int}", self.get_task, methods=["GET"]),
            Route("/documents/{document_id:int}", self.get_document, methods=["GET"]),
            Route("/annotations/{annotation_id:int}", self.get_annotation, methods=["GET"]),
            Route("/annotations/{annotation_id:int}/content", self.get_content, methods=["GET"]),
            Route("/annotations/{annotation_id:int}/confirm", self.confirm, methods=["POST"]),
            Route("/queues/{queue_id:int}/export", self.export, methods=["GET", "POST"]),
        ]

    def reset_state(self) -> None:
        for task in list(self._walks):
            task.cancel()
        self.tokens.clear()
        self.logged_out.clear()
        self.logins = 0
        for store in (self.annotations, self.documents, self.contents, self.uploads):
            store.clear()
        self.tasks.clear()
        self._review.clear()

    async def aclose(self) -> None:
        walks, self._walks = set(self._walks), set()
        for task in walks:
            task.cancel()
        if walks:
            await asyncio.gather(*walks, return_exceptions=True)
        await super().aclose()

    async def drain(self) -> None:
        """Wait until every annotation's walk ended (tests: bound it with a timeout)."""
        while self._walks:
            await asyncio.wait(set(self._walks))

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        default_code, default_message = _DEFAULT_ERRORS.get(status, ("error", "Error."))
        return JSONResponse(
            {"detail": message or default_message, "code": code or default_code},
            status,
            headers=headers,
        )

    # Auth -------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "token") or not token:
            return self.error_response(401, code="not_authenticated")
        issued = self.tokens.get(token)
        if token in self.logged_out or (
            issued is not None and time.time() - issued > self.token_ttl
        ):
            return self.error_response(401, code="authentication_failed", message="Invalid token.")
        if issued is None and "invalid" in token:
            return self.error_response(401, code="authentication_failed", message="Invalid token.")
        return None

    async def login(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("username") or not body.get("password"):
            return JSONResponse(
                {"username": ["This field is required."], "password": ["This field is required."]},
                400,
            )
        if "invalid" in str(body["password"]):
            return self.error_response(
                401,
                code="authentication_failed",
                message="Unable to log in with provided credentials.",
            )
        self.logins += 1
        token = secrets.token_hex(20)
        self.tokens[token] = time.time()
        return JSONResponse({"key": token, "domain": "sandbox.rossum.app"})

    async def logout(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        _, _, token = request.headers.get("authorization", "").partition(" ")
        self.logged_out.add(token.strip())
        return JSONResponse({"detail": "Successfully logged out."})

    async def user(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        return JSONResponse(
            {"id": 1, "url": self._url(request, "users", 1), "username": "sandbox@rossum.app"}
        )

    # Upload -----------------------------------------------------------------------------

    async def create_upload(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        queue = request.query_params.get("queue", "")
        if not queue.isdigit():
            return JSONResponse({"queue": ["This field is required."]}, 400)
        raw = await request.body()
        if len(raw) > MAX_UPLOAD_BYTES:
            return self.error_response(413)
        filename, content = _file_of(request.headers.get("content-type", ""), raw)
        if content is None:
            return JSONResponse({"content": ["No file was submitted."]}, 400)
        document_id, annotation_id = next(self._ids), next(self._ids)
        upload_id, task_id = next(self._ids), next(self._ids)
        self.documents[document_id] = {
            "id": document_id,
            "url": self._url(request, "documents", document_id),
            "s3_name": uuid.uuid4().hex,
            "mime_type": "application/pdf",
            "arrived_at": _now(),
            "original_file_name": filename,
            "annotations": [self._url(request, "annotations", annotation_id)],
        }
        self.annotations[annotation_id] = {
            "id": annotation_id,
            "url": self._url(request, "annotations", annotation_id),
            "status": "importing",
            "document": self._url(request, "documents", document_id),
            "queue": self._url(request, "queues", int(queue)),
            "schema": self._url(request, "schemas", 1),
            "content": self._url(request, "annotations", annotation_id) + "/content",
            "arrived_at": _now(),
            "modified_at": _now(),
            "exported_at": None,
            "messages": [],
            "metadata": {},
        }
        while len(self.annotations) > MAX_ANNOTATIONS:
            self.annotations.popitem(last=False)
        self.uploads[upload_id] = {
            "id": upload_id,
            "url": self._url(request, "uploads", upload_id),
            "queue": self._url(request, "queues", int(queue)),
            "created_at": _now(),
            "documents": [self.documents[document_id]["url"]],
            "annotations": [self.annotations[annotation_id]["url"]],
            "additional_documents": [],
            "email": None,
            "creator": self._url(request, "users", 1),
        }
        task_url = self._url(request, "tasks", task_id)
        self.tasks[task_id] = {
            "id": task_id,
            "url": task_url,
            "type": "upload",
            "status": "succeeded",  # the document and annotation exist: the import goes on
            "expires_at": None,
            "detail": None,
            "content": {"upload": self.uploads[upload_id]["url"]},
            "result_url": self.uploads[upload_id]["url"],
        }
        walk = asyncio.get_running_loop().create_task(
            self._walk(annotation_id, content), name=f"sandbox-rossum-{annotation_id}"
        )
        self._walks.add(walk)
        walk.add_done_callback(self._walks.discard)
        return JSONResponse({"url": task_url}, 202)

    async def get_task(self, request: Request) -> Response:
        return self._get(request, self.tasks, request.path_params["task_id"])

    async def get_upload(self, request: Request) -> Response:
        return self._get(request, self.uploads, request.path_params["upload_id"])

    async def get_document(self, request: Request) -> Response:
        return self._get(request, self.documents, request.path_params["document_id"])

    async def get_annotation(self, request: Request) -> Response:
        return self._get(request, self.annotations, request.path_params["annotation_id"])

    async def get_content(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        annotation_id = request.path_params["annotation_id"]
        if annotation_id not in self.annotations:
            return self.error_response(404)
        return JSONResponse({"content": self.contents.get(annotation_id, [])})

    async def confirm(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        annotation_id = request.path_params["annotation_id"]
        annotation = self.annotations.get(annotation_id)
        if annotation is None:
            return self.error_response(404)
        if annotation["status"] not in ("to_review", "reviewing"):
            return self.error_response(
                400,
                code="invalid",
                message=f"Cannot confirm an annotation in {annotation['status']}.",
            )
        event = self._review.get(annotation_id)
        if event is not None:
            event.set()
        return Response(status_code=204)

    async def export(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        ids = [int(i) for i in request.query_params.get("id", "").split(",") if i.isdigit()]
        results = []
        for annotation_id in ids:
            annotation = self.annotations.get(annotation_id)
            if annotation is None:
                continue
            results.append(
                {
                    "url": annotation["url"],
                    "status": annotation["status"],
                    "arrived_at": annotation["arrived_at"],
                    "exported_at": annotation["exported_at"],
                    "document": annotation["document"],
                    "content": _flatten_values(self.contents.get(annotation_id, [])),
                }
            )
        pagination = {"total": len(results), "total_pages": 1, "next": None, "previous": None}
        return JSONResponse({"pagination": pagination, "results": results})

    # The walk ---------------------------------------------------------------------------

    async def _walk(self, annotation_id: int, content: bytes) -> None:
        await asyncio.sleep(self.step_seconds)
        try:
            text = await asyncio.to_thread(pdf_text, content)
        except Unreadable as exc:
            self._set_status(annotation_id, "failed_import", message=str(exc))
            return
        fields = read_fields(text)
        self.contents[annotation_id] = content_tree(fields, lambda: next(self._ids))
        # Made before the annotation shows to_review, so a confirm arriving at any moment
        # after that is never lost.
        review = self._review.setdefault(annotation_id, asyncio.Event()) if fields.review else None
        for status in WALK:
            if status == "confirmed" and review is not None:
                await review.wait()
                self._review.pop(annotation_id, None)
            self._set_status(annotation_id, status)
            if status != WALK[-1]:
                await asyncio.sleep(self.step_seconds)

    def _set_status(self, annotation_id: int, status: str, *, message: str | None = None) -> None:
        annotation = self.annotations.get(annotation_id)
        if annotation is None:
            return
        previous = annotation["status"]
        annotation["status"] = status
        annotation["modified_at"] = _now()
        if status == "exported":
            annotation["exported_at"] = _now()
        if message:
            annotation["messages"] = [{"type": "error", "content": message, "id": None}]
        self._hook(annotation, previous)

    def _hook(self, annotation: dict[str, Any], previous: str) -> None:
        secret = self.hook_secret
        if secret is None or not self.callbacks.enabled:
            return
        document_id = int(str(annotation["document"]).rstrip("/").rsplit("/", 1)[-1])
        document = self.documents.get(document_id, {})
        payload = {
            "request_id": str(uuid.uuid4()),
            "timestamp": _now(),
            "hook": str(annotation["url"]).rsplit("/annotations/", 1)[0] + "/hooks/1",
            "settings": {},
            "action": "changed",
            "event": "annotation_status",
            "annotation": {**annotation, "previous_status": previous},
            "document": {
                "id": document.get("id"),
                "url": document.get("url"),
                "original_file_name": document.get("original_file_name"),
                "mime_type": document.get("mime_type"),
                "arrived_at": document.get("arrived_at"),
            },
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "Rossum/hook (sandbox)",
            **sign_body(secret, body),
        }
        self.callbacks.schedule([lambda: CallbackRequest(body, headers)])

    # Helpers ----------------------------------------------------------------------------

    def _get(self, request: Request, store: dict[int, dict[str, Any]], key: int) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        item = store.get(key)
        return JSONResponse(item) if item is not None else self.error_response(404)

    @staticmethod
    def _url(request: Request, kind: str, object_id: int) -> str:
        """An object's absolute URL, under the sandbox's own mount (`root_path`: Starlette's
        `base_url` is the top-level app's)."""
        return f"{mounted_url(request)}/{kind}/{object_id}"


def _flatten_values(tree: Any) -> Any:
    """The export's shape: a datapoint's `value` on itself rather than under `content`."""
    if isinstance(tree, list):
        return [_flatten_values(node) for node in tree]
    if isinstance(tree, dict):
        node = {k: _flatten_values(v) for k, v in tree.items() if k != "content"}
        if isinstance(tree.get("content"), dict):
            node["value"] = tree["content"].get("value")
        return node
    return tree


def _file_of(content_type: str, raw: bytes) -> tuple[str, bytes | None]:
    """(filename, bytes) of the `content` field of a multipart body, or the raw body."""
    if not content_type.lower().startswith("multipart/form-data"):
        return "document.pdf", raw or None
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + raw
    )
    if not message.is_multipart():
        return "document.pdf", None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "content":
            payload = part.get_payload(decode=True)
            filename = part.get_filename() or "document.pdf"
            return str(filename), payload if isinstance(payload, bytes) else None
    return "document.pdf", None


def create_app() -> RossumSandbox:
    return RossumSandbox()
