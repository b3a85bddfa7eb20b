"""The Rossum verifier alone, with signatures made here by `hmac` (not the project's)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from kit.signing import PayloadInvalid, SignatureInvalid, get_verifier

SECRET = "a hook secret"


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {
        "x-rossum-signature-sha256": "sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    }


def test_event_id_and_type_come_from_the_signed_body() -> None:
    verifier = get_verifier("rossum")
    assert verifier is not None
    body = json.dumps(
        {"request_id": "r-1", "event": "annotation_content", "action": "initialize"}
    ).encode()
    event = verifier.verify(sign(body), body, SECRET)
    assert (event.event_id, event.event_type) == ("r-1", "annotation_content.initialize")

    bare = b'{"event": "annotation_status"}'
    event = verifier.verify(sign(bare), bare, SECRET)
    assert event.event_id == "sha256:" + hashlib.sha256(bare).hexdigest()
    assert event.event_type == "annotation_status"
    # Upper-case hex is the same signature.
    upper = {
        "x-rossum-signature-sha256": sign(bare)["x-rossum-signature-sha256"]
        .upper()
        .replace("SHA256=", "sha256=")
    }
    assert verifier.verify(upper, bare, SECRET).event_type == "annotation_status"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-rossum-signature-sha256": ""},
        {"x-rossum-signature-sha256": "sha256="},
        {"x-rossum-signature-sha256": "sha1=" + "0" * 40},
        {"x-rossum-signature-sha256": "sha256=\u00e9\u00e9"},
        {"x-elis-signature": "sha1=" + "0" * 40},
    ],
)
def test_malformed_signatures_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureInvalid):
        get_verifier("rossum").verify(headers, b"{}", SECRET)  # type: ignore[union-attr]


def test_authentic_junk_is_a_payload_error() -> None:
    for body in (b"not json", b"[]", b'"text"'):
        with pytest.raises(PayloadInvalid):
            get_verifier("rossum").verify(sign(body), body, SECRET)  # type: ignore[union-attr]
