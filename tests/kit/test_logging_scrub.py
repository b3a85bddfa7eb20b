"""kit.logging.scrub(): vendor key shapes the gateway stores never reach a log line,
and ids that merely look random (request ids, 32 hex) stay readable."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from kit.logging import RequestIdFilter, make_handler, request_id_var, scrub

TWILIO_TOKEN = "9f86d081884c7d659a2feaa0c55ad015"  # 32 hex, the shape of an auth token
TWILIO_SID = "AC" + "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "secret",
    [
        "re_4x7Kp2Qz_9aBcDeFgHiJkLmNoPqRsTuVwXyZ",  # Resend
        "re_test_1234567890",
        "sk_live_51H8abcdEFGHijklMNOPqrstUVWX",  # Stripe secret key
        "sk_test_51H8abcdEFGHijklMNOPqrstUVWX",
        "rk_live_51H8abcdEFGHijklMNOPqrstUVWX",  # Stripe restricted key
        "whsec_7xYzAbCdEfGhIjKlMnOpQrStUv",  # Stripe webhook secret
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345",  # OpenAI
        "sk-AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        "SG.aBcDeFgHiJkLmNoPqRsTuV.wXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ01234",  # SendGrid
        "secret_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V",  # Notion (internal)
        "ntn_4567890123abcdefGHIJKLmnopqrSTUVwxyz01234567",  # Notion (current)
        "GOCSPX-AbCdEfGhIjKlMnOpQrStUvWxYz01",  # Google OAuth client secret
        "AKIAIOSFODNN7EXAMPLE",  # AWS access key id
    ],
)
def test_vendor_keys_are_redacted_anywhere_in_a_line(secret: str) -> None:
    for line in (
        f"calling vendor with {secret} now",
        f"url=https://api.example.com/v1?x=1 key {secret}",
        f'{{"detail": "bad key {secret}"}}',
    ):
        out = scrub(line)
        assert secret not in out, out
        assert "[REDACTED]" in out


@pytest.mark.parametrize(
    "line",
    [
        f"twilio auth_token={TWILIO_TOKEN}",
        f'{{"authToken": "{TWILIO_TOKEN}"}}',
        f"TWILIO_AUTH_TOKEN {TWILIO_TOKEN}",
        f"auth token: {TWILIO_TOKEN}",
        f"credential '{TWILIO_TOKEN}' refused",
        f"secret {TWILIO_TOKEN.upper()}",
        f"https://{TWILIO_SID}:{TWILIO_TOKEN}@api.twilio.com/2010-04-01/Accounts",
    ],
)
def test_hex_tokens_are_redacted_after_a_keyish_label(line: str) -> None:
    out = scrub(line)
    assert TWILIO_TOKEN not in out.lower(), out
    assert "[REDACTED]" in out


def test_twilio_account_sid_is_kept_with_its_token_cut() -> None:
    out = scrub(f"{TWILIO_SID}:{TWILIO_TOKEN}")
    assert out == f"{TWILIO_SID}:[REDACTED]"


@pytest.mark.parametrize(
    "line",
    [
        "request_id={rid}",
        "X-Request-Id: {rid}",
        '{{"requestId": "{rid}", "message": "done"}}',
        "INFO switchboard.auth [{rid}] login ok",
        "job {rid} finished",
        "event id {rid} from resend",
        "sha256 of the body {rid}",
    ],
)
def test_request_ids_and_other_hex_ids_are_kept(line: str) -> None:
    rid = uuid.uuid4().hex
    text = line.format(rid=rid)
    assert scrub(text) == text


def test_ordinary_words_are_kept() -> None:
    for text in (
        "retrying resend.send_email (attempt 2)",
        "skipped 3 rows; re-queued the job",
        "pk=42 updated",
        "token refresh rotated for user 7",
    ):
        assert scrub(text) == text


def test_log_lines_from_the_handler_are_scrubbed_and_keep_the_request_id() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("switchboard.test.scrub")
    logger.propagate = False
    handler = make_handler(stream, json=True)
    logger.addHandler(handler)
    rid = uuid.uuid4().hex
    token = request_id_var.set(rid)
    try:
        logger.warning(
            "resend refused re_4x7Kp2Qz_9aBcDeFgHiJkLmNoPqRsTuVwXyZ",
            extra={"twilio": {"auth_token": TWILIO_TOKEN}},
        )
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    line = stream.getvalue()
    record = json.loads(line)
    assert record["request_id"] == rid
    assert "re_4x7Kp2Qz" not in line and TWILIO_TOKEN not in line
    assert record["twilio"]["auth_token"] == "[REDACTED]"


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("token=abcdef123456 failed")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("switchboard.http", logging.INFO, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    "record",
    [
        _record("%s %s %s", "POST", "/graphql", 200, status=200, duration_ms=0.2, client_ip="::1"),
        _record(
            "called with sk_live_51H8abcdEFGHijklMNOPqrstUVWX",
            request_id="sk_live_51H8abcdEFGHijklMNOPqrstUVWX",  # a client-chosen request id
            detail={"password": "hunter2", "nested": ["Bearer abcdefghijkl"]},
            _private="skipped",
        ),
        _record("failed", exc=True, request_id="r1"),
    ],
)
def test_the_short_json_path_writes_what_python_json_logger_writes(
    record: logging.LogRecord,
) -> None:
    """Plain records skip python-json-logger's own format(); the line must not change."""
    from pythonjsonlogger.json import JsonFormatter

    formatter = make_handler(io.StringIO(), json=True).formatter
    assert formatter is not None
    RequestIdFilter().filter(record)
    ours = formatter.format(record)
    reference = scrub(JsonFormatter.format(formatter, record))  # type: ignore[arg-type]
    assert ours == reference
    assert "sk_live_51H8" not in ours and "hunter2" not in ours and "abcdefghijkl" not in ours


@pytest.mark.parametrize(
    "line",
    ["token=abcdef1234567890secret", 'password: "hunter2hunter2"', "api_key sk_live_abcdef123456"],
)
def test_scrubbing_twice_changes_nothing_more(line: str) -> None:
    once = scrub(line)
    assert "[REDACTED]" in once
    assert scrub(once) == once


def test_a_value_that_only_starts_like_the_marker_is_still_cut() -> None:
    scrubbed = scrub("token=[REDACTEDbutreallyasecret]")
    assert "butreallyasecret" not in scrubbed and scrubbed.startswith("token=[REDACTED]")


def test_the_time_of_a_line_is_the_standard_formatters() -> None:
    """The formatter keeps strftime's text per second; the text is the stdlib's own."""
    from kit.logging import ScrubbingJsonFormatter

    formatter = ScrubbingJsonFormatter("{asctime}{message}", style="{")
    standard = logging.Formatter()
    for created in (1_800_000_000.0, 1_800_000_000.999, 1_800_000_001.5, 1_700_000_000.25):
        record = logging.LogRecord("t", logging.INFO, "p", 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert formatter.formatTime(record) == standard.formatTime(record)
