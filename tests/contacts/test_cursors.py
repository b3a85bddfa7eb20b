"""Cursors: the fast encodings (ids, timestamps) are byte for byte the general one, and
every cursor decodes to the value and row id it was made from."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import pytest

from resolvers.pagination import Order, _encode_value, decode_cursor, encode_cursor

VALUES = [
    5,
    0,
    dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2030, 1, 1, 1, 2, 3, 456789, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    dt.date(2030, 1, 2),
    Decimal("12.50"),
    'Ünïcode "quoted"',
    None,
    True,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_fast_cursors_are_the_general_encoding(value: object) -> None:
    row = {"field": value, "id": 42}
    general = json.dumps([_encode_value(value), 42], separators=(",", ":"))
    expected = base64.urlsafe_b64encode(general.encode()).decode()
    assert encode_cursor(row, Order("field")) == expected
    assert decode_cursor(expected) == (value, 42)
