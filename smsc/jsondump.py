"""JSON written fast: orjson, else the standard library where orjson refuses a value.

orjson costs a fifth to a tenth of the standard library for the lines, jobs and rows written per
request and per event. It refuses a lone surrogate (a JSON body's `\\ud800` escape, a replayed job of
an older ingress) and an integer past 64 bits; the standard library writes those, escaped, as every
writer here did before orjson.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """`value` as UTF-8 JSON; `default` gives the JSON form of a value neither library knows."""
    try:
        return orjson.dumps(value, default=default)
    except orjson.JSONEncodeError:
        return json.dumps(value, default=default).encode("utf-8")
