"""STORAGE_URL: which object store holds the files, parsed once at start-up.

    file://data/storage                       local disk, relative to the working directory
    file:///var/lib/switchboard/files         local disk, absolute
    s3://my-bucket                            AWS S3 (region and keys from S3_* / DO_*)
    s3://my-bucket?endpoint=https://fra1.digitaloceanspaces.com&region=fra1
    s3://files?endpoint=http://127.0.0.1:9000&path_style=true   MinIO, path-style

The endpoint is the operator's: it is trusted as set (no outbound guard).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import parse_qs, urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class StorageLocation:
    kind: Literal["file", "s3"]
    path: str = ""  # file: the directory
    bucket: str = ""  # s3
    endpoint: str = ""
    region: str = ""
    path_style: bool = False

    def with_defaults(self, *, endpoint: str, region: str, path_style: bool) -> StorageLocation:
        """Fill what the URL left out from the separate S3_* settings."""
        return replace(
            self,
            endpoint=self.endpoint or endpoint,
            region=self.region or region,
            path_style=self.path_style or path_style,
        )


def parse_storage_url(url: str) -> StorageLocation:
    """The location `url` names; ValueError saying what is wrong otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise ValueError("file:// needs a directory, e.g. file://data/storage")
        return StorageLocation(kind="file", path=path)
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not bucket or parts.path.strip("/"):
            raise ValueError("s3:// needs a bucket name and nothing after it, e.g. s3://files")
        query = parse_qs(parts.query)
        unknown = set(query) - {"endpoint", "region", "path_style"}
        if unknown:
            raise ValueError(f"unknown s3:// option(s): {', '.join(sorted(unknown))}")
        endpoint = query.get("endpoint", [""])[0]
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError("s3:// endpoint must be an http(s):// URL")
        style = query.get("path_style", ["false"])[0].lower()
        if style not in _TRUE | _FALSE:
            raise ValueError("s3:// path_style must be true or false")
        return StorageLocation(
            kind="s3",
            bucket=bucket,
            endpoint=endpoint,
            region=query.get("region", [""])[0],
            path_style=style in _TRUE,
        )
    raise ValueError("must start with file:// or s3://")
