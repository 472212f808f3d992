"""Ingress and worker together, in one process: what ends up in PostgreSQL."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rq import Queue
from rq.registry import FailedJobRegistry

from ingress.app import create_app
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.integration.test_ingress import CASES, post
from tests.payloads import SAMPLES, Request, build
from workers.runner import run

Drain = Callable[[], None]


def rows(db: Any, sql: str) -> list[tuple[Any, ...]]:
    return list(db.execute(sql).fetchall())


@pytest.mark.parametrize(("kind", "fmt", "charset", "algorithm"), CASES, ids="-".join)
async def test_every_variant_lands_in_its_table(
    kind: str, fmt: str, charset: str, algorithm: str, settings: Settings, db: Any, redis_db: Any
) -> None:
    """Every kind × transport × charset × hash becomes exactly the row its kind defines."""
    settings = Settings.from_env(service_env(SMSC_HASH=algorithm))
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await post(client, build(kind, fmt, charset, algorithm)))[0] == 200
    run(settings, burst=True)
    if kind == "status":
        assert rows(
            db, "SELECT message_id, phone, status, status_at, params->>'sender' FROM status_events"
        ) == [(1001, "79998887766", 1, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), "SMSC.RU")]
        assert rows(db, "SELECT message_id, status FROM messages") == [(1001, 1)]
    elif kind == "incoming":
        assert rows(db, "SELECT id, sms_id, phone, to_phone, text, sent_at FROM incoming_messages") == [
            (
                5001,
                1001,
                "79998887766",
                "79001234567",
                "Привет, мир!",
                datetime(2023, 11, 14, 22, 15, 0, tzinfo=UTC),
            )
        ]
    else:
        assert rows(db, "SELECT phone, called_at, waitcall FROM call_confirmations") == [
            ("79998887766", datetime(2023, 11, 14, 22, 16, 40, tzinfo=UTC), 1)
        ]


async def send(client: TestClient[Any, Any], *requests: Request) -> None:
    for r in requests:
        assert (await post(client, r))[0] == 200


async def test_status_columns_are_normalized(client: TestClient[Any, Any], drain: Drain, db: Any) -> None:
    """A status with every documented parameter is stored typed, column by column."""
    flag = 7 | 1 << 5 | 1 << 8 | 0b10 << 9
    params = {
        "id": "77",
        "phone": "79990000001",
        "status": "20",
        "time": "01.02.2024 10:00:00",
        "err": "6",
        "syserr": "0x45",
        "cnt": "2",
        "type": "7",
        "cost": "3,50",
        "flag": str(flag),
        "sender": "Shop",
        "dtmf": "12#",
        "cmt": "order 5\novertime: 01:30",
        "imsi": "250011234567890",
        "msc": "79168999100",
        "mcc": "250",
        "mnc": "01",
        "cn": "Россия",
        "net": "МТС",
        "rcn": "",
        "rnet": "",
        "calltime": "42",
        "callmenu": "1*2",
        "ringtime": "00:07",
        "custom": "kept",
    }
    await send(client, build("status", charset="windows-1251", params=params))
    drain()
    row = db.execute(
        "SELECT status_at, ts, status_time, err, syserr, cnt, type, cost, flag, flag_message_type,"
        " flag_second_balance, flag_template, flag_template_kind, sender, dtmf, cmt, overtime, imsi, msc,"
        " mcc, mnc, cn, net, rcn, rnet, calltime, callmenu, ringtime, params->>'custom' FROM status_events"
    ).fetchone()
    moscow_10am = datetime(2024, 2, 1, 7, 0, tzinfo=UTC)
    assert row == (
        moscow_10am,
        None,
        moscow_10am,
        6,
        "0x45",
        2,
        7,
        Decimal("3.50"),
        flag,
        7,
        True,
        True,
        2,
        "Shop",
        "12#",
        "order 5",
        timedelta(minutes=1, seconds=30),
        "250011234567890",
        "79168999100",
        "250",
        "01",
        "Россия",
        "МТС",
        None,
        None,
        42,
        "1*2",
        7,
        "kept",
    )


async def test_ts_wins_over_time(client: TestClient[Any, Any], drain: Drain, db: Any) -> None:
    """With both `ts` and `time`, status_at is `ts`; `time` is kept in status_time, two-digit year."""
    params = {**SAMPLES["status"], "ts": "1700000000", "time": "14.11.23 22:13:21"}
    await send(client, build("status", params=params))
    drain()
    assert rows(db, "SELECT status_at, status_time FROM status_events") == [
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), datetime(2023, 11, 14, 19, 13, 21, tzinfo=UTC))
    ]


def status(code: int, ts: int, message_id: str = "9") -> Request:
    return build(
        "status", params={"id": message_id, "phone": "79990000002", "status": str(code), "ts": str(ts)}
    )


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
async def test_messages_ends_at_newest_status(
    order: tuple[int, ...], client: TestClient[Any, Any], drain: Drain, db: Any
) -> None:
    """Statuses 0 → 1 → 2 delivered in any order: `messages` holds 2, `status_events` all three."""
    sequence = [status(0, 1_700_000_000), status(1, 1_700_000_060), status(2, 1_700_000_120)]
    for i in order:
        await send(client, sequence[i])
        drain()  # one at a time, so a late older status really arrives after a newer one
    assert rows(db, "SELECT status FROM messages") == [(2,)]
    assert rows(db, "SELECT status FROM status_events ORDER BY status") == [(0,), (1,), (2,)]


async def test_tie_on_time_keeps_higher_status(client: TestClient[Any, Any], drain: Drain, db: Any) -> None:
    """Two statuses of the same second: the higher code wins, whatever the order."""
    await send(client, status(20, 1_700_000_000), status(1, 1_700_000_000))
    drain()
    assert rows(db, "SELECT status FROM messages") == [(20,)]


async def test_copies_make_one_row(client: TestClient[Any, Any], drain: Drain, db: Any) -> None:
    """The same event of each kind sent many times, shuffled, is stored once."""
    copies = [build(kind) for kind in SAMPLES for _ in range(5)]
    random.Random(7).shuffle(copies)
    await send(client, *copies)
    drain()
    counts = [
        rows(db, f"SELECT count(*) FROM {t}")[0][0]
        for t in ("status_events", "messages", "incoming_messages", "call_confirmations")
    ]
    assert counts == [1, 1, 1, 1]


async def test_unreadable_value_is_dead_lettered_alone(
    client: TestClient[Any, Any], queue: Queue, drain: Drain, db: Any
) -> None:
    """A signed status whose `status` is no number goes to the dead letter with a readable reason."""
    await send(client, build("status", params={**SAMPLES["status"], "status": "delivered"}))
    drain()
    assert rows(db, "SELECT count(*) FROM status_events") == [(0,)]
    assert rows(db, "SELECT kind, event_ref, phone, error_class, reason, attempts FROM dead_letters") == [
        (
            "status",
            "1001",
            "79998887766",
            "PermanentError",
            "status: status 'delivered' is not a whole number",
            1,
        )
    ]
    assert FailedJobRegistry(queue=queue).count == 0
