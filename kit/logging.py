"""JSON logs carrying the request id, with secrets scrubbed from every line."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Anything that looks like a credential is cut out before a line is written.
_SECRET_PATTERNS = [
    # key=value / "key": "value" pairs whose name says secret, first: a quoted value is cut
    # whole (a passphrase has spaces), an unquoted one (with its `Bearer `) to a separator.
    re.compile(
        r"""(?i)(["']?[\w-]*(?:password|passwd|secret|token|api_?key|authorization|signature)"""
        r"""["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|(?:bearer\s+)?[^\s,;&}\]]+)"""
    ),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # Prefixed keys: ours, Stripe (sk_/rk_/pk_live|test_, whsec_), Resend (re_), OpenAI.
    re.compile(r"\b(sbk|sbr|whsec|sk|rk|pk|key|sk-proj|re)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    # SendGrid, Notion (secret_ / ntn_), Google OAuth client secrets, AWS access key ids.
    re.compile(r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"),
    re.compile(r"\b(?:secret_[A-Za-z0-9]{43}|ntn_[A-Za-z0-9]{20,})\b"),
    re.compile(r"\bGOCSPX-[A-Za-z0-9_-]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    # 32 hex (a Twilio auth token) only after a key-ish label or an account SID: request
    # ids and other hex ids have the same shape and must stay readable.
    re.compile(
        r"""(?i)(\b[\w-]*(?:auth|token|secret|passw(?:or)?d|api_?key|access_?key|private_?key"""
        r"""|credential|signature)[\w-]*["']?(?:\s*[:=]\s*|\s+)["']?)[0-9a-f]{32}\b"""
    ),
    re.compile(r"\b(AC[0-9a-fA-F]{32}:)[0-9a-fA-F]{32}\b"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
]


def _keep_label(match: re.Match[str]) -> str:
    """The label kept, the secret cut; a quoted value stays quoted (valid JSON stays JSON)."""
    label, value = match.group(1), match.group(0)[len(match.group(1)) :]
    bare = value.strip("\"'")
    rest = match.string[match.end() : match.end() + 1]
    if bare == "[REDACTED]" or (bare == "[REDACTED" and rest == "]"):
        return match.group(0)  # scrubbed already (the line is scrubbed again after encoding)
    quote = value[0] if len(value) > 1 and value[0] in "\"'" and value[-1] == value[0] else ""
    return f"{label}{quote}[REDACTED]{quote}"


# Every pattern above needs one of these (lower-cased) words or prefixes, so lines without
# any (nearly all of them) skip the patterns. Plain substring tests, not one regex with
# ~25 alternatives: that tried every branch at every position of every access line.
_TRIGGER_WORDS = (
    "bearer", "sbk_", "sbr_", "whsec_", "sk-", "sk_", "rk_", "pk_", "key_", "eyj", "passw",
    "secret", "token", "apikey", "api_key", "auth", "signature", "credential", "access_key",
    "accesskey", "private_key", "privatekey", "ntn_", "gocspx-",
)  # fmt: skip
_TRIGGER_AT_WORD = ("re_", "sg.", "akia", "asia")  # only at a word start
_TRIGGER_AT_WORD_RE = re.compile(r"\b(?:re_|sg\.|akia|asia)")
_TRIGGER_SID = re.compile(r"ac[0-9a-f]{32}:")


def _may_hold_secret(text: str) -> bool:
    low = text.lower()
    for word in _TRIGGER_WORDS:
        if word in low:
            return True
    for word in _TRIGGER_AT_WORD:
        if word in low:
            if _TRIGGER_AT_WORD_RE.search(low):
                return True
            break
    return "ac" in low and _TRIGGER_SID.search(low) is not None


def scrub(text: str) -> str:
    if not _may_hold_secret(text):
        return text
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(_keep_label, text)
        else:
            text = pattern.sub("[REDACTED]", text)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v) for v in value]
    return value


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get()
        return True


_PLAIN_FIELDS = frozenset({"time", "level", "logger", "request_id", "status", "duration_ms"})


class ScrubbingJsonFormatter(OrjsonFormatter):
    """python-json-logger's formatter (its orjson encoder), scrubbing every value before
    JSON encoding (so quoted secrets are seen unescaped), then the encoded line once more."""

    _scrubbing = False  # set while a line with a possible secret is encoded again
    _second: int | None = None
    _second_text = ""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        data = super().process_log_record(log_data)
        if not self._scrubbing:
            return data
        return {k: v if k in _PLAIN_FIELDS else _scrub_value(v) for k, v in data.items()}

    def format(self, record: logging.LogRecord) -> str:
        # Nearly every line holds none of the words a secret needs, and JSON escaping
        # never splits one of them: a line without any is the line as scrubbed. Only
        # the others are encoded again with every value scrubbed, then scrubbed whole.
        line = super().format(record)
        if not _may_hold_secret(line):
            return line
        self._scrubbing = True
        try:
            return scrub(super().format(record))
        finally:
            self._scrubbing = False

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        # The default format's date and time change once a second; strftime per line
        # was a tenth of the formatting.
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"  # the default msec format


class ScrubbingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def make_handler(stream: Any = None, json: bool = True) -> logging.Handler:
    """The handler the gateway logs through: request ids added, secrets scrubbed."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RequestIdFilter())
    formatter: logging.Formatter
    if json:
        formatter = ScrubbingJsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
        )
    else:
        formatter = ScrubbingTextFormatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
        )
    handler.setFormatter(formatter)
    return handler


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    handler = make_handler(json=json)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_switchboard", False):
            root.removeHandler(existing)
    handler._switchboard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("tortoise", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # uvicorn's access log would print query strings; ours logs requests with ids instead.
    logging.getLogger("uvicorn.access").disabled = True
    # No line the gateway writes names a thread, a process or a source line, and every
    # request writes one: the logging docs' own optimisation (skip collecting them, the
    # caller's frame walk included) takes a fifth off each record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]


def log_extra(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
