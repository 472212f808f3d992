"""normalize(): typed values from the text parameters of a decoded event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from smsc.exceptions import PermanentError
from smsc.protocol.decode import Decoded
from smsc.protocol.fields import Format, Kind
from smsc.protocol.normalize import CallConfirmation, IncomingMessage, StatusEvent, normalize

MOSCOW = ZoneInfo("Europe/Moscow")
# When the ingress received the request: the plausibility of every time is relative to it.
RECEIVED = datetime(2025, 1, 1, tzinfo=UTC)
BASE: dict[str, dict[str, str]] = {
    "status": {"id": "1001", "phone": "79998887766", "status": "1"},
    "incoming": {"id": "5001", "phone": "79998887766", "mes": "Привет", "to": "79001234567"},
    "call": {"waitcall": "1", "phone": "79998887766", "ts": "1700000200"},
}


def event(kind: str, tz: ZoneInfo = MOSCOW, received_at: datetime = RECEIVED, /, **params: str | None) -> Any:
    """normalize() of an event of `kind`: BASE's fields, then `params` (None removes a field)."""
    merged = dict(BASE[kind])
    for name, value in params.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return normalize(
        Decoded(kind=Kind(kind), fmt=Format.FORM, charset="utf-8", params=merged), tz, received_at
    )


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "params", "expected_type"),
    [("status", {}, StatusEvent), ("incoming", {}, IncomingMessage), ("call", {}, CallConfirmation)],
    ids=["status", "incoming", "call"],
)
def test_each_kind_becomes_its_event_type(kind: str, params: dict[str, str], expected_type: type) -> None:
    """A status, an incoming SMS and a call confirmation each normalize to their own event type."""
    assert type(event(kind, **params)) is expected_type


@pytest.mark.parametrize(
    ("kind", "field", "text", "attribute", "expected"),
    [
        ("status", "id", "1001", "message_id", 1001),
        ("status", "id", "9223372036854775807", "message_id", 9223372036854775807),
        ("status", "id", " 42 ", "message_id", 42),
        ("status", "status", "-3", "status", -3),
        ("status", "status", "25", "status", 25),
        ("status", "status", "-2147483648", "status", -2147483648),
        ("status", "status", "2147483647", "status", 2147483647),
        ("status", "err", "237", "err", 237),
        ("status", "cnt", "3", "cnt", 3),
        ("status", "type", "10", "type", 10),
        ("status", "flag", "65535", "flag", 65535),
        ("incoming", "id", "5001", "id", 5001),
        ("incoming", "sms_id", "1001", "sms_id", 1001),
        ("incoming", "sms_id", "9223372036854775807", "sms_id", 9223372036854775807),
        ("call", "waitcall", "1", "waitcall", 1),
    ],
    ids=lambda v: str(v)[:20],
)
def test_integer_fields_become_ints(kind: str, field: str, text: str, attribute: str, expected: int) -> None:
    """Integer fields become Python ints of the value sent."""
    value = getattr(event(kind, **{field: text}), attribute)
    assert type(value) is int
    assert value == expected


@pytest.mark.parametrize(
    ("kind", "attribute", "params"),
    [
        ("status", "err", {"err": None}),
        ("status", "err", {"err": ""}),
        ("status", "cnt", {"cnt": " "}),
        ("status", "ts", {"ts": None}),
        ("status", "cost", {"cost": ""}),
        ("status", "flag_template", {"flag": None}),
        ("status", "cmt", {"cmt": ""}),
        ("status", "overtime", {"cmt": "no overtime here"}),
        ("incoming", "sms_id", {"sms_id": None}),
        ("incoming", "sent_at", {"sent": ""}),
        ("incoming", "smsc", {"smsc": None}),
        ("call", "calltime", {"calltime": None}),
    ],
    ids=lambda v: str(v)[:20],
)
def test_absent_or_empty_optional_fields_are_none(
    kind: str, attribute: str, params: dict[str, str | None]
) -> None:
    """An optional field that is absent or empty becomes None."""
    assert getattr(event(kind, **params), attribute) is None


@pytest.mark.parametrize(
    ("kind", "field", "text", "attribute", "expected"),
    [
        ("status", "ts", "1700000000", "ts", utc(2023, 11, 14, 22, 13, 20)),
        ("status", "ts", "946684800", "ts", utc(2000, 1, 1)),
        ("status", "ts", "1700000000.5", "ts", datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        ("incoming", "sent", "1700000100", "sent_at", utc(2023, 11, 14, 22, 15)),
        ("incoming", "time", "1700000101", "server_received_at", utc(2023, 11, 14, 22, 15, 1)),
        ("call", "ts", "1700000200", "called_at", utc(2023, 11, 14, 22, 16, 40)),
        ("call", "ts", "1719835200", "called_at", utc(2024, 7, 1, 12)),
    ],
    ids=lambda v: str(v)[:20],
)
def test_unix_times_become_aware_utc_datetimes(
    kind: str, field: str, text: str, attribute: str, expected: datetime
) -> None:
    """`ts`, `sent` and an incoming SMS's `time` (unix seconds) become aware UTC datetimes."""
    value = getattr(event(kind, **{field: text}), attribute)
    assert value == expected
    assert value.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("zone", "text", "expected"),
    [
        ("Europe/Moscow", "14.11.23 22:13:20", utc(2023, 11, 14, 19, 13, 20)),
        ("Europe/Moscow", "14.11.2023 22:13:20", utc(2023, 11, 14, 19, 13, 20)),
        ("Europe/Moscow", "01.01.24 02:00:00", utc(2023, 12, 31, 23)),
        ("Europe/Moscow", " 01.07.2024 00:00:00 ", utc(2024, 6, 30, 21)),
        ("Asia/Vladivostok", "14.11.23 22:13:20", utc(2023, 11, 14, 12, 13, 20)),
        ("America/New_York", "14.11.23 22:13:20", utc(2023, 11, 15, 3, 13, 20)),
        ("America/New_York", "01.07.23 12:00:00", utc(2023, 7, 1, 16)),
        ("UTC", "29.02.24 23:59:59", utc(2024, 2, 29, 23, 59, 59)),
        ("UTC", "1.2.24 3:04:05", utc(2024, 2, 1, 3, 4, 5)),
        ("UTC", "01.02.24  03:04:05", utc(2024, 2, 1, 3, 4, 5)),
    ],
    ids=lambda v: str(v)[:20],
)
def test_a_status_time_is_read_in_the_given_zone(zone: str, text: str, expected: datetime) -> None:
    """A status's `time` (DD.MM.YY or DD.MM.YYYY hh:mm:ss) is local time of the given zone."""
    value = event("status", ZoneInfo(zone), time=text).status_time
    assert value.utcoffset() is not None
    assert value == expected


@pytest.mark.parametrize(
    ("ts", "time", "expected"),
    [
        pytest.param("1700000000", "01.01.24 00:00:00", utc(2023, 11, 14, 22, 13, 20), id="both-ts-wins"),
        pytest.param("1700000000", None, utc(2023, 11, 14, 22, 13, 20), id="ts-only"),
        pytest.param(None, "01.01.24 00:00:00", utc(2023, 12, 31, 21), id="time-only"),
        pytest.param("", "01.01.24 00:00:00", utc(2023, 12, 31, 21), id="empty-ts"),
        pytest.param(None, None, None, id="neither"),
        pytest.param("", "", None, id="both-empty"),
    ],
)
def test_status_at_is_ts_else_time(ts: str | None, time: str | None, expected: datetime | None) -> None:
    """`status_at` is `ts` if present, else the local `time`, else None."""
    assert event("status", ts=ts, time=time).status_at == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.25", Decimal("1.25")),
        ("1,25", Decimal("1.25")),
        ("0", Decimal(0)),
        (" 3.10 ", Decimal("3.10")),
        ("1871.62", Decimal("1871.62")),
        ("-0.5", Decimal("-0.5")),
        ("0.1", Decimal("0.1")),
    ],
    ids=lambda v: str(v),
)
def test_cost_becomes_an_exact_decimal(text: str, expected: Decimal) -> None:
    """`cost` becomes the exact Decimal written, a decimal comma read as a point."""
    cost = event("status", cost=text).cost
    assert isinstance(cost, Decimal)
    assert cost == expected


# flag, message type (bits 0-3), second balance (bit 5), template (bit 8), template kind (bits 9-10)
FLAGS = [
    (0, 0, False, False, 0),
    (7, 7, False, False, 0),  # a call
    (8, 8, False, False, 0),  # an e-mail
    (16, 0, False, False, 0),  # bit 4 belongs to none of the fields
    (32, 0, True, False, 0),
    (37, 5, True, False, 0),  # 32 + 5
    (256, 0, False, True, 0),
    (768, 0, False, True, 1),  # 256 + 512
    (1280, 0, False, True, 2),  # 256 + 1024
    (1792, 0, False, True, 3),  # 256 + 512 + 1024
    (1314, 2, True, True, 2),  # 1024 + 256 + 32 + 2
    (2048, 0, False, False, 0),  # bit 11 belongs to none of the fields
    (0x0F0F, 15, False, True, 3),  # 2048 + 1024 + 512 + 256 + 15
    (65535, 15, True, True, 3),
]


@pytest.mark.parametrize(
    ("flag", "message_type", "second_balance", "template", "template_kind"),
    FLAGS,
    ids=[str(f[0]) for f in FLAGS],
)
def test_flag_bits_are_split_into_their_fields(
    flag: int, message_type: int, second_balance: bool, template: bool, template_kind: int
) -> None:
    """`flag` splits into message type (bits 0-3), second balance (5), template (8), template kind (9-10)."""
    e = event("status", flag=str(flag))
    assert e.flag == flag
    assert (e.flag_message_type, e.flag_second_balance, e.flag_template, e.flag_template_kind) == (
        message_type,
        second_balance,
        template,
        template_kind,
    )


def test_no_flag_leaves_every_flag_field_none() -> None:
    """Without `flag`, the flag and all its bit fields are None."""
    e = event("status", flag=None)
    assert (e.flag, e.flag_message_type, e.flag_second_balance, e.flag_template, e.flag_template_kind) == (
        None,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("cmt", "expected_cmt", "expected_overtime"),
    [
        pytest.param("call back", "call back", None, id="plain"),
        pytest.param("перезвонить\nзавтра", "перезвонить\nзавтра", None, id="two-lines"),
        pytest.param("call back\novertime: 01:30", "call back", timedelta(seconds=90), id="last-line"),
        pytest.param(
            "call back\novertime: 12:07\n", "call back", timedelta(minutes=12, seconds=7), id="final-newline"
        ),
        pytest.param("overtime: 00:05", None, timedelta(seconds=5), id="only-overtime"),
        pytest.param("overtime: 02:00\nsecond line", "second line", timedelta(minutes=2), id="first-line"),
        pytest.param("note\n  overtime:  75:00  ", "note", timedelta(minutes=75), id="spaces-long"),
        pytest.param("call back\r\novertime: 01:30", "call back", timedelta(seconds=90), id="crlf-before"),
        pytest.param(
            "the overtime: 01:30 was long", "the overtime: 01:30 was long", None, id="not-its-own-line"
        ),
        pytest.param("first\novertime: 00:10\nlast", "first\nlast", timedelta(seconds=10), id="middle-line"),
        pytest.param(
            "call back\r\novertime: 01:30\r\n", "call back", timedelta(seconds=90), id="crlf-terminated"
        ),
    ],
)
def test_an_overtime_line_is_split_off_the_comment(
    cmt: str, expected_cmt: str | None, expected_overtime: timedelta | None
) -> None:
    """An `overtime: mm:ss` line of `cmt` becomes `overtime`; the comment keeps the other lines."""
    e = event("status", cmt=cmt)
    assert (e.cmt, e.overtime) == (expected_cmt, expected_overtime)


HLR = {
    "type": "4",
    "imsi": "250011234567890",
    "msc": "79168999100",
    "mcc": "250",
    "mnc": "01",
    "cn": "Россия",
    "net": "МТС",
    "rcn": "Казахстан",
    "rnet": "Beeline KZ",
}


@pytest.mark.parametrize("field", [f for f in HLR if f != "type"])
def test_hlr_extras_are_kept_as_text(field: str) -> None:
    """HLR extras stay the exact text sent, leading zeros of `mnc` included."""
    e = event("status", **HLR)
    assert getattr(e, field) == HLR[field]
    assert e.params[field] == HLR[field]


@pytest.mark.parametrize("kind", ["status", "call"])
@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("calltime", "45", 45),
        ("calltime", "01:30", 90),
        ("calltime", "0:05", 5),
        ("calltime", "1:02:03", 3723),
        ("ringtime", "00:15", 15),
        ("ringtime", "7", 7),
        ("callmenu", "2", "2"),
        ("callmenu", "1,3#", "1,3#"),
    ],
    ids=lambda v: str(v),
)
def test_voice_extras_are_kept(kind: str, field: str, text: str, expected: int | str) -> None:
    """Voice extras are kept: durations as seconds (from `N` or `mm:ss`), the menu as text."""
    e = event(kind, **{field: text})
    assert getattr(e, field) == expected
    assert e.params[field] == text


@pytest.mark.parametrize("kind", ["status", "incoming", "call"])
def test_every_parameter_is_kept_in_params(kind: str) -> None:
    """Every parameter received, known or not, the hash included, is in `.params` unchanged."""
    extra = {"md5": "0" * 32, "shop": "42", "unknown-thing": "Ёж", "empty": "", "charset": "utf-8"}
    e = event(kind, **extra)
    assert e.params == {**BASE[kind], **extra}


@pytest.mark.parametrize(
    ("kind", "field", "attribute"),
    [
        ("status", "cmt", "cmt"),
        ("status", "sender", "sender"),
        ("status", "net", "net"),
        ("incoming", "mes", "text"),
        ("incoming", "smsc", "smsc"),
        ("call", "callmenu", "callmenu"),
    ],
)
def test_nul_characters_are_replaced(kind: str, field: str, attribute: str) -> None:
    """A NUL in a value or a parameter name becomes U+FFFD, in the typed value and in `.params`."""
    e = event(kind, **{field: "a\x00b", "name\x00x": "v\x00"})
    assert getattr(e, attribute) == "a\ufffdb"
    assert e.params[field] == "a\ufffdb"
    assert e.params["name\ufffdx"] == "v\ufffd"
    assert not any("\x00" in k or "\x00" in v for k, v in e.params.items())


@pytest.mark.parametrize("surrogate", [chr(0xD800), chr(0xDFFF)], ids=["high", "low"])
def test_lone_surrogates_are_replaced(surrogate: str) -> None:
    """A lone surrogate (a JSON escape UTF-8 cannot carry) in `mes` becomes U+FFFD."""
    e = event("incoming", mes=f"a{surrogate}b")
    assert isinstance(e, IncomingMessage)
    assert e.text == "a\ufffdb"
    assert e.params["mes"].encode("utf-8") == "a\ufffdb".encode()


PERMANENT = [
    ("status", "status", "abc"),
    ("status", "status", "1.5"),
    ("status", "status", "2147483648"),
    ("status", "status", "-2147483649"),
    ("status", "id", "1.5"),
    ("status", "id", "abc"),
    ("status", "id", "9223372036854775808"),
    ("status", "id", "-9223372036854775809"),
    ("status", "err", "0x10"),
    ("status", "err", "99999999999"),
    ("status", "cnt", "1e3"),
    ("status", "type", "1.0"),
    ("status", "ts", "yesterday"),
    ("status", "ts", "14.11.23 22:13:20"),
    ("status", "ts", "99999999999999999999"),
    ("status", "time", "2023-11-14"),
    ("status", "time", "2023-11-14 22:13:20"),
    ("status", "time", "14.11.23"),
    ("status", "time", "32.11.23 22:13:20"),
    ("status", "time", "1700000000"),
    ("status", "cost", "abc"),
    ("status", "cost", "NaN"),
    ("status", "cost", "Infinity"),
    ("status", "cost", "-inf"),
    ("status", "cost", "1.2.3"),
    ("status", "flag", "70000"),
    ("status", "flag", "65536"),
    ("status", "flag", "-1"),
    ("status", "flag", "abc"),
    ("status", "calltime", "abc"),
    ("status", "calltime", "2147483648"),
    ("status", "ringtime", "1:2:3:4"),
    ("status", "time", "31.02.24 10:00:00"),
    ("status", "time", "14.11.23 24:00:00"),
    ("incoming", "id", "1.5"),
    ("incoming", "id", "9223372036854775808"),
    ("incoming", "sms_id", "x"),
    ("incoming", "sent", "yesterday"),
    ("incoming", "time", "14.11.23 22:13:20"),
    ("call", "ts", "yesterday"),
    ("call", "ts", "2023-11-14"),
    ("call", "waitcall", "yes"),
    ("call", "ringtime", "-5"),
]
HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("kind", "field", "text"),
    [
        *[pytest.param(k, f, t, id=f"{k}-{f}-{t[:20]}") for k, f, t in PERMANENT],
        pytest.param("status", "status", HUGE, id="status-status-5000-digits"),
        pytest.param("incoming", "id", HUGE, id="incoming-id-5000-digits"),
        pytest.param("status", "calltime", HUGE, id="status-calltime-5000-digits"),
    ],
)
def test_an_unreadable_value_is_a_permanent_error_naming_the_field(kind: str, field: str, text: str) -> None:
    """A known field whose value cannot be read raises PermanentError whose message names the field."""
    with pytest.raises(PermanentError, match=rf"\b{field}\b"):
        event(kind, **{field: text})


DAY = 86_400
RECEIVED_TS = 1_735_689_600  # RECEIVED as unix seconds, written out independently
# kind, field, value, whether it is stored: plausible from 2000-01-01 UTC to a day after receipt.
TIMES = [
    *[
        (kind, field, value, ok)
        for kind, field in (("status", "ts"), ("incoming", "sent"), ("incoming", "time"), ("call", "ts"))
        for value, ok in (
            ("946684800", True),  # 2000-01-01 00:00:00 UTC
            ("946684799", False),
            ("0", False),
            (str(RECEIVED_TS + DAY), True),
            (str(RECEIVED_TS + DAY + 1), False),
            ("4102444800", False),  # 2100
            ("253402300799", False),  # the last second datetime holds
        )
    ],
    ("status", "time", "01.01.00 03:00:00", True),  # midnight UTC, in Moscow
    ("status", "time", "01.01.00 02:59:59", False),
    ("status", "time", "31.12.99 23:59:59", False),  # a 2-digit 99 is 1999
    ("status", "time", "02.01.25 03:00:00", True),  # a day after receipt, in Moscow
    ("status", "time", "02.01.25 03:00:01", False),
    ("status", "time", "01.01.2068 00:00:00", False),
]


@pytest.mark.parametrize(
    ("kind", "field", "text", "stored"),
    TIMES,
    ids=[f"{k}-{f}-{t}-{'ok' if o else 'no'}" for k, f, t, o in TIMES],
)
def test_a_time_before_2000_or_over_a_day_after_receipt_is_a_permanent_error(
    kind: str, field: str, text: str, stored: bool
) -> None:
    """`ts`, `time` and `sent` are stored only from 2000 up to a day after the request was received."""
    if stored:
        event(kind, MOSCOW, RECEIVED, **{field: text})
    else:
        with pytest.raises(PermanentError, match=rf"\b{field}\b.*implausible"):
            event(kind, MOSCOW, RECEIVED, **{field: text})


def test_plausibility_is_relative_to_the_receipt_not_to_now() -> None:
    """A time far in today's future is accepted when the request was received later (a replay)."""
    later = datetime(2200, 1, 1, tzinfo=UTC)
    assert event("call", MOSCOW, later, ts="7258118400").called_at == utc(2200, 1, 1)
    with pytest.raises(PermanentError):
        event("call", MOSCOW, RECEIVED, ts="7258118400")
