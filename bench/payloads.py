"""Signed callbacks for the load: forms as the gateway posts them, every event distinct.

Signing is `tests.payloads.build` (hashlib, the vendor's recipe), never the product's own code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.config import SECRET
from smsc.protocol.raw import RawRequest, redact_query
from tests.payloads import Request, build

# Out of every 20 callbacks: 12 delivery statuses (pairs: 0 "delivered to operator" then 1 "delivered"),
# 5 incoming SMS in Cyrillic and 3 call confirmations.
KINDS = ("status",) * 12 + ("incoming",) * 5 + ("call",) * 3
MIX = "60% status, 25% incoming SMS (Cyrillic; utf-8 / windows-1251), 15% call; url-encoded forms, md5"
BASE_TS = 1_700_000_000


def callback(n: int, base_ts: int = BASE_TS) -> tuple[str, Request]:
    """The n-th callback of a load: its kind and the request; distinct n make distinct events.

    Its event time is `base_ts + n` (unix seconds).
    """
    kind = KINDS[n % len(KINDS)]
    charset = "utf-8" if (n // len(KINDS)) % 2 else "windows-1251"
    ts = str(base_ts + n)
    params: dict[str, str]
    if kind == "status":
        params = status_params(n, base_ts)
    elif kind == "incoming":
        params = {
            "id": str(5_000_000 + n),
            "sms_id": str(1_000_000 + n // 2),
            "phone": f"7916{n % 10_000_000:07d}",
            "mes": f"Здравствуйте! Подтверждаю заказ №{n % 10_000:04d}, доставка в четверг. Ёлка",
            "to": "79001234567",
            "smsc": "79168999100",
            "sent": ts,
            "time": str(base_ts + n + 1),
        }
    else:
        params = {"waitcall": "1", "phone": f"7903{n % 10_000_000:07d}", "ts": ts}
    return kind, build(kind, "form", charset, "md5", params, secret=SECRET)


def status_params(n: int, base_ts: int = BASE_TS) -> dict[str, str]:
    """The parameters of the n-th callback if it is a delivery status."""
    return {
        "id": str(1_000_000 + n // 2),
        "phone": f"7999{n // 2 % 10_000_000:07d}",
        "status": str(n % 2),
        "ts": str(base_ts + n),
        "err": "0",
        "cnt": "1",
        "type": "0",
        "cost": "1.25",
        "flag": "0",
        "sender": "SMSC.RU",
    }


def status_rows(first: int, count: int) -> list[dict[str, Any]]:
    """Delivery statuses as rows for the references' table (shaped like status_events)."""
    rows = []
    for n in range(first, first + count):
        params = {**status_params(n), "charset": "utf-8", "md5": "0" * 32}
        row: dict[str, Any] = {
            k: int(params[k]) for k in ("id", "status", "ts", "err", "cnt", "type", "flag")
        }
        row.update(phone=params["phone"], cost=params["cost"], sender=params["sender"], params=params)
        rows.append({**row, "request_id": uuid.uuid4().hex, "received_at": time.time()})
    return rows


def write_wrk_file(path: Path, first: int, count: int) -> Path:
    """The callbacks first..first+count-1 as bench/wrk/load.lua reads them: path, type, body a line."""
    with path.open("wb") as f:
        for n in range(first, first + count):
            _, r = callback(n)
            f.write(f"/smsc?{r.query}\t{r.content_type}\t".encode("ascii") + r.body + b"\n")
    return path


def raw_requests(first: int, count: int, base_ts: int = BASE_TS) -> Iterable[RawRequest]:
    """The same callbacks as the ingress would store them (hash parameters of the query redacted)."""
    for n in range(first, first + count):
        _, r = callback(n, base_ts)
        yield RawRequest(
            rid=uuid.uuid4().hex,
            received_at=time.time(),
            query=redact_query(r.query),
            content_type=r.content_type,
            body=r.body,
        )
