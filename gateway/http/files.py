"""The local storage backend's signed URLs (S3 serves its own presigned ones):

- `GET /files/{token}`: download, with HTTP Range (one range: 206; outside the object:
  416), `Content-Disposition: attachment` with a safe name, `nosniff`, no caching.
  A forged or altered token is 403, an expired one 403, a deleted object 404.
- `PUT /files/upload/{token}`: a direct upload's bytes, exactly the size and SHA-256 the
  token binds (else 400 and nothing stored); `completeUpload` then verifies the type.

Tokens are path parameters named `token`, which the access log never writes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.http.responses import error_body
from resolvers.context import Services
from resolvers.storage import BadRange, ObjectMissing, TokenRefused, content_disposition, storage_of

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _error(request: Request, status: int, code: str, message: str) -> Response:
    request_id = request.scope.get("state", {}).get("request_id")
    body = error_body("/files", code, message, request_id)
    return Response(
        body, status, media_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _refused(request: Request, err: TokenRefused) -> Response:
    message = "This link has expired." if err.expired else "This link is not valid."
    return _error(request, 403, "FORBIDDEN", message)


class _BadUpload(Exception):
    pass


def routes(services: Services) -> list[BaseRoute]:
    async def download(request: Request) -> Response:
        store = storage_of(services)
        try:
            claims = store.signer.read(request.path_params["token"], "get")
        except TokenRefused as err:
            return _refused(request, err)
        start: int | None = None
        end: int | None = None
        ranged = False
        header = request.headers.get("range")
        match = _RANGE.match(header.strip()) if header else None
        if match and (match.group(1) or match.group(2)):  # other forms: the whole object
            ranged = True
            start = int(match.group(1)) if match.group(1) else None
            end = int(match.group(2)) if match.group(2) else None
        try:
            got = await store.get(str(claims["key"]), start, end)
        except ObjectMissing:
            return _error(request, 404, "NOT_FOUND", "The file no longer exists.")
        except BadRange as err:
            return Response(
                status_code=416,
                headers={"Content-Range": f"bytes */{err.size}", "Cache-Control": "no-store"},
            )
        headers = {
            "Content-Disposition": content_disposition(str(claims.get("name", "file"))),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Accept-Ranges": "bytes",
            "Content-Length": str(got.length),
            "Content-Security-Policy": "sandbox",
        }
        status = 200
        if ranged:
            status = 206
            headers["Content-Range"] = f"bytes {got.start}-{got.end}/{got.size}"
        media = str(claims.get("type") or "application/octet-stream")
        return StreamingResponse(got.chunks, status, headers=headers, media_type=media)

    async def upload(request: Request) -> Response:
        store = storage_of(services)
        try:
            claims = store.signer.read(request.path_params["token"], "put")
        except TokenRefused as err:
            return _refused(request, err)
        size, sha256 = int(claims["size"]), str(claims["sha256"])
        length = request.headers.get("content-length")
        if length is not None and length != str(size):
            return _error(request, 400, "BAD_USER_INPUT", f"Send exactly {size} bytes.")

        async def checked() -> AsyncIterator[bytes]:
            seen = 0
            digest = hashlib.sha256()
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > size:
                    raise _BadUpload(f"Send exactly {size} bytes.")
                digest.update(chunk)
                yield chunk
            if seen != size:
                raise _BadUpload(f"Send exactly {size} bytes.")
            if digest.hexdigest() != sha256:
                raise _BadUpload("The bytes' SHA-256 differs from the announced one.")

        try:
            await store.put(str(claims["key"]), checked())
        except _BadUpload as err:
            return _error(request, 400, "BAD_USER_INPUT", str(err))
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    return [
        Route("/files/upload/{token}", upload, methods=["PUT"]),
        Route("/files/{token}", download, methods=["GET", "HEAD"]),
    ]
