"""Money: ISO 4217 currencies and their minor units, and the conversion between an exact
decimal amount (what GraphQL shows) and an integer of minor units (what payment vendors
take: cents, yen, fils).

Part of kit/: imports no project package.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 active codes → minor units (decimal places the currency allows).
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN "
    "ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES "
    "KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK "
    "MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR "
    "SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD "
    "TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
)
CURRENCY_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO.split(), 2),
    **dict.fromkeys(_ZERO.split(), 0),
    **dict.fromkeys(_THREE.split(), 3),
    **dict.fromkeys(_FOUR.split(), 4),
}


class MoneyError(ValueError):
    """An amount or currency that cannot be charged; the message says why (for a user)."""


def minor_units(currency: str) -> int:
    """Decimal places of `currency` (an ISO 4217 code); MoneyError when unknown."""
    places = CURRENCY_MINOR_UNITS.get(currency)
    if places is None:
        raise MoneyError("is not an ISO 4217 currency code")
    return places


def normalise_currency(value: str) -> str:
    """`usd` → `USD`; MoneyError when it is not an ISO 4217 code."""
    code = (value or "").strip().upper()
    minor_units(code)
    return code


def display_amount(amount: Decimal, currency: str) -> Decimal:
    """`amount` with the currency's own number of decimal places."""
    places = CURRENCY_MINOR_UNITS.get(currency, 4)
    return Decimal(amount).quantize(Decimal(1).scaleb(-places))


def to_minor(amount: Decimal, currency: str) -> int:
    """`12.34 USD` → 1234, `500 JPY` → 500, `1.234 KWD` → 1234. MoneyError for an amount
    with more decimal places than the currency has, or not a finite number."""
    places = minor_units(currency)
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise MoneyError("must be a number") from None
    if not value.is_finite():
        raise MoneyError("must be a number")
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{currency} allows at most {places} decimal places")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """1234 USD → Decimal('12.34'); 500 JPY → Decimal('500'); 1234 KWD → Decimal('1.234')."""
    places = CURRENCY_MINOR_UNITS.get(currency, 2)
    return Decimal(int(minor)).scaleb(-places).quantize(Decimal(1).scaleb(-places))
