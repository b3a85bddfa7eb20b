"""Phone numbers: parsed and validated with `phonenumbers` (Google's libphonenumber data),
stored and compared in E.164 (`+14155550123`).

`e164(raw, field)` is the one door: it takes what a person types (spaces, dashes,
brackets, a leading `00`, a `whatsapp:` prefix) and answers the E.164 form, or raises
`BadUserInput` naming `field` — for text that is too long, holds control characters, has
no country code, or is not a number any country assigns.

Part of kit/: imports no project package.
"""

from __future__ import annotations

import phonenumbers

from kit.errors import BadUserInput

MAX_INPUT_CHARS = 64
WHATSAPP_PREFIX = "whatsapp:"


class InvalidPhone(BadUserInput):
    """A phone number that cannot be used (coded, naming the field)."""

    code = "INVALID_PHONE_NUMBER"


def _problem(raw: object) -> str | None:
    if not isinstance(raw, str):
        return "must be a phone number"
    if len(raw) > MAX_INPUT_CHARS:
        return f"must be at most {MAX_INPUT_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        return "must not contain control characters"
    if not raw.strip():
        return "is required"
    return None


def e164(raw: object, field: str = "phone", *, region: str | None = None) -> str:
    """`raw` as an E.164 number (`+14155550123`), or InvalidPhone naming `field`."""
    problem = _problem(raw)
    if problem is None:
        text = str(raw).strip()
        if text.lower().startswith(WHATSAPP_PREFIX):
            text = text[len(WHATSAPP_PREFIX) :].strip()
        if text.startswith("00"):
            text = "+" + text[2:]
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            problem = "is not a phone number (give it with its country code, e.g. +14155550123)"
        else:
            if not phonenumbers.is_valid_number(number):
                problem = "is not a valid phone number"
            else:
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhone(f"{field} {problem}.", details={field: problem})


def is_e164(value: str) -> bool:
    """Whether `value` is already a valid number in E.164 form."""
    try:
        return e164(value) == value
    except BadUserInput:
        return False
