"""S3-compatible object storage over aioboto3 (AWS S3, DigitalOcean Spaces, Cloudflare R2,
MinIO): streamed puts (one PutObject for small bodies, a multipart upload beyond one
part), ranged reads, head, delete, and presigned GET and PUT URLs.

The endpoint, region and keys come from the operator's settings, so the endpoint is
trusted as set. Objects are written private (no ACL is ever granted).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from providers.objects import (
    CHUNK_BYTES,
    BadRange,
    Download,
    ObjectHead,
    ObjectMissing,
    Stored,
    resolve_range,
)

# S3's smallest multipart part (but the last) is 5 MiB; bodies below one part are one PUT.
PART_BYTES = 8 * 1024 * 1024
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit


def b64_sha256(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _missing(err: ClientError) -> bool:
    code = str(err.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        path_style: bool = False,
    ) -> None:
        self.bucket = bucket
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region or "us-east-1",
        )
        self._endpoint = endpoint or None
        self._config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "virtual"},
            # Checksums only where we ask for them: several S3-compatible stores refuse
            # the trailing CRC checksums newer botocore adds by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def _s3(self) -> Any:
        """One pooled client for the process, opened on first use."""
        if self._client is None:
            stack = AsyncExitStack()
            self._client = await stack.enter_async_context(
                self._session.client("s3", endpoint_url=self._endpoint, config=self._config)
            )
            self._stack = stack
        return self._client

    async def aclose(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = self._client = None

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        s3 = await self._s3()
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if len(buffer) >= PART_BYTES:
                    if upload_id is None:
                        created = await s3.create_multipart_upload(
                            Bucket=self.bucket, Key=key, ContentType=content_type
                        )
                        upload_id = created["UploadId"]
                    parts.append(await self._part(s3, key, upload_id, len(parts) + 1, buffer))
                    buffer = bytearray()
            if upload_id is None:
                sha = digest.hexdigest()
                await s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=bytes(buffer),
                    ContentType=content_type,
                    ChecksumSHA256=b64_sha256(sha),
                    Metadata={"sha256": sha},
                )
            else:
                if buffer:
                    parts.append(await self._part(s3, key, upload_id, len(parts) + 1, buffer))
                await s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload_id is not None:
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return Stored(key=key, size=size, sha256=digest.hexdigest())

    async def _part(
        self, s3: Any, key: str, upload_id: str, number: int, body: bytearray
    ) -> dict[str, Any]:
        answer = await s3.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(body)
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def head(self, key: str) -> ObjectHead:
        s3 = await self._s3()
        try:
            answer = await s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as err:
            if _missing(err):
                raise ObjectMissing(key) from None
            raise
        sha = (answer.get("Metadata") or {}).get("sha256")
        checksum = answer.get("ChecksumSHA256")
        if sha is None and checksum and "-" not in checksum:
            sha = base64.b64decode(checksum).hex()
        return ObjectHead(key=key, size=int(answer["ContentLength"]), sha256=sha)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> Download:
        s3 = await self._s3()
        size = (await self.head(key)).size
        if size == 0:
            if (start, end) != (None, None):
                raise BadRange(0)
            return Download(size=0, start=0, end=-1, chunks=_empty())
        whole = start is None and end is None
        first, last = (0, size - 1) if whole else resolve_range(size, start, end)
        try:
            answer = await s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={first}-{last}")
        except ClientError as err:
            if _missing(err):
                raise ObjectMissing(key) from None
            if err.response.get("Error", {}).get("Code") == "InvalidRange":
                raise BadRange(size) from None
            raise
        return Download(size=size, start=first, end=last, chunks=_body(answer["Body"]))

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=key)

    async def keys(self, prefix: str = "") -> list[str]:
        s3 = await self._s3()
        found: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return found

    async def presigned_get(
        self, key: str, *, expires_in: int, filename: str, content_type: str
    ) -> str:
        s3 = await self._s3()
        return str(
            await s3.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentDisposition": filename,
                    "ResponseContentType": content_type,
                },
                ExpiresIn=min(expires_in, MAX_PRESIGN_SECONDS),
            )
        )

    async def presigned_put(
        self, key: str, *, expires_in: int, size: int, sha256: str
    ) -> tuple[str, dict[str, str]]:
        """A URL to PUT exactly `size` bytes whose SHA-256 is `sha256` under `key`, and
        the headers the client must send with it (they are signed: the store refuses a
        body of another length or checksum)."""
        s3 = await self._s3()
        checksum = b64_sha256(sha256)
        url = await s3.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ContentLength": size,
                "ChecksumSHA256": checksum,
            },
            ExpiresIn=min(expires_in, MAX_PRESIGN_SECONDS),
        )
        headers = {"Content-Length": str(size), "x-amz-checksum-sha256": checksum}
        return str(url), headers


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _body(body: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in body.iter_chunks(CHUNK_BYTES):
            yield chunk
    finally:
        body.close()
