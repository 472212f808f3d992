"""smsc.jsondump: orjson's JSON, the standard library's where orjson refuses a value."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
import pytest

from smsc import jsondump


@pytest.mark.parametrize(
    ("value", "orjson_writes_it"),
    [
        ({"rid": "a1", "text": "Привет", "n": 3, "ok": True, "none": None}, True),
        (["\x00", "\u2028", '"quoted"', "back\\slash"], True),
        ({"reason": "lone \ud800 surrogate"}, False),
        ({"id": 1 << 70}, False),
        ([{"note": "\udcff\udcfe"}], False),
    ],
    ids=["plain", "escaped", "high-surrogate", "big-int", "low-surrogates"],
)
def test_the_same_value_comes_back(value: Any, orjson_writes_it: bool) -> None:
    written = jsondump.dumps(value)
    assert json.loads(written) == value
    written.decode("utf-8")  # whatever orjson refused, the bytes are UTF-8
    if orjson_writes_it:
        assert written == orjson.dumps(value)
    else:
        assert written == json.dumps(value).encode("utf-8")


@pytest.mark.parametrize(
    "value", [Decimal("1.25"), {"cost": Decimal("0.5")}, {"bad": "\ud800", "cost": Decimal(2)}]
)
def test_default_gives_unknown_values_their_form(value: Any) -> None:
    assert json.loads(jsondump.dumps(value, default=str)) == json.loads(json.dumps(value, default=str))
