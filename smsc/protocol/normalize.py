"""Typed values from the text parameters of a decoded event.

A value of a known field that cannot be read (a `status` that is not a number, a `time` that is no
date) raises PermanentError naming the field: no retry fixes it, a person or a release does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TypeVar
from zoneinfo import ZoneInfo

from smsc.exceptions import PermanentError
from smsc.protocol.decode import Decoded
from smsc.protocol.fields import Kind
from smsc.text import is_storable, storable

# Digit counts are bounded: the range checks below then never meet Python's int() size limit.
_INT = re.compile(r"[+-]?[0-9]{1,30}")
_UNIX = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")
_DURATION = re.compile(r"(?:(?:([0-9]{1,10}):)?([0-9]{1,10}):)?([0-9]{1,10})")
_OVERTIME = re.compile(
    r"^[ \t]*overtime:[ \t]*([0-9]{1,6}):([0-9]{2})[ \t]*(?:\r?\n|\r?\Z)", re.MULTILINE | re.IGNORECASE
)
_LOCAL_TIME_FORMATS = ("%d.%m.%y %H:%M:%S", "%d.%m.%Y %H:%M:%S")
# The form the gateway sends, read without strptime (1.5 vs 4.8 µs a time); any other form that
# strptime accepts with the formats above (one-digit fields, other blanks) still goes to it.
_LOCAL_TIME = re.compile(r"([0-9]{2})\.([0-9]{2})\.([0-9]{2}|[0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
T = TypeVar("T")
_INT32 = 1 << 31
_INT64 = 1 << 63
# No SMSC event is older; more than a day past the request's receipt is no clock skew but a forgery
# or a broken sender (the hash covers neither `time` nor `sent`, nor a status's `ts`).
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_AHEAD = timedelta(days=1)


@dataclass(frozen=True)
class Flag:
    """The 2-byte `flag`: message type (bits 0-3), second balance (bit 5), template (bit 8),
    template kind (bits 9-10: 0 service, 1 transactional, 2 authorisation, 3 advertising)."""

    message_type: int
    second_balance: bool
    template: bool
    template_kind: int

    @classmethod
    def from_int(cls, flag: int) -> Flag:
        return cls(
            message_type=flag & 0x0F,
            second_balance=bool(flag & (1 << 5)),
            template=bool(flag & (1 << 8)),
            template_kind=(flag >> 9) & 0b11,
        )


# The events are plain dataclasses: nothing changes one after normalize(), and a frozen one sets
# each field through object.__setattr__, 2.2 µs an event more (a status has 32 fields).
@dataclass
class StatusEvent:
    """A delivery status of a message we sent."""

    message_id: int
    phone: str
    status: int
    status_at: datetime | None
    ts: datetime | None
    status_time: datetime | None
    err: int | None
    syserr: str | None
    cnt: int | None
    type: int | None
    cost: Decimal | None
    flag: int | None
    flag_message_type: int | None
    flag_second_balance: bool | None
    flag_template: bool | None
    flag_template_kind: int | None
    sender: str | None
    dtmf: str | None
    cmt: str | None
    overtime: timedelta | None
    imsi: str | None
    msc: str | None
    mcc: str | None
    mnc: str | None
    cn: str | None
    net: str | None
    rcn: str | None
    rnet: str | None
    calltime: int | None
    callmenu: str | None
    ringtime: int | None
    params: dict[str, str]


@dataclass
class IncomingMessage:
    """An SMS a subscriber sent to us."""

    id: int
    sms_id: int | None
    phone: str
    to_phone: str
    text: str
    smsc: str | None
    sent_at: datetime | None
    server_received_at: datetime | None
    params: dict[str, str]


@dataclass
class CallConfirmation:
    """A call received by the "confirm the number by a call" service."""

    phone: str
    called_at: datetime
    waitcall: int | None
    calltime: int | None
    callmenu: str | None
    ringtime: int | None
    params: dict[str, str]


Event = StatusEvent | IncomingMessage | CallConfirmation


def normalize(decoded: Decoded, tz: ZoneInfo, received_at: datetime) -> Event:
    """Turn a decoded event into typed values; `tz` is the account time zone of a status's `time`.

    Times are refused unless plausible: from 2000 to a day after `received_at`, when the ingress
    received the request.
    """
    # A visible replacement of what PostgreSQL cannot store beats losing the event; decode() has
    # refused names that would collide once replaced.
    p = (
        dict(decoded.params)
        if is_storable("".join((*decoded.params, *decoded.params.values())))
        else {storable(k): storable(v) for k, v in decoded.params.items()}
    )
    latest = received_at + _AHEAD
    if decoded.kind is Kind.INCOMING:
        return IncomingMessage(
            id=_required(_int(p, "id", _INT64)),
            sms_id=_int(p, "sms_id", _INT64),
            phone=p["phone"].strip(),
            to_phone=p["to"].strip(),
            text=p["mes"],
            smsc=_text(p, "smsc"),
            sent_at=_plausible("sent", _unix(p, "sent"), latest),
            server_received_at=_plausible("time", _unix(p, "time"), latest),
            params=p,
        )
    if decoded.kind is Kind.CALL:
        return CallConfirmation(
            phone=p["phone"].strip(),
            called_at=_required(_plausible("ts", _unix(p, "ts"), latest)),
            waitcall=_int(p, "waitcall"),
            calltime=_duration(p, "calltime"),
            callmenu=_text(p, "callmenu"),
            ringtime=_duration(p, "ringtime"),
            params=p,
        )
    ts = _plausible("ts", _unix(p, "ts"), latest)
    status_time = _plausible("time", _local_time(p, "time", tz), latest)
    flag = _int(p, "flag")
    if flag is not None and not 0 <= flag <= 0xFFFF:
        raise PermanentError(f"flag {flag} is not a 2-byte number")
    bits = Flag.from_int(flag) if flag is not None else None
    cmt, overtime = _comment(p.get("cmt"))
    return StatusEvent(
        message_id=_required(_int(p, "id", _INT64)),
        phone=p["phone"].strip(),
        status=_required(_int(p, "status")),
        status_at=ts or status_time,
        ts=ts,
        status_time=status_time,
        err=_int(p, "err"),
        syserr=_text(p, "syserr"),
        cnt=_int(p, "cnt"),
        type=_int(p, "type"),
        cost=_decimal(p, "cost"),
        flag=flag,
        flag_message_type=bits.message_type if bits else None,
        flag_second_balance=bits.second_balance if bits else None,
        flag_template=bits.template if bits else None,
        flag_template_kind=bits.template_kind if bits else None,
        sender=_text(p, "sender"),
        dtmf=_text(p, "dtmf"),
        cmt=cmt,
        overtime=overtime,
        imsi=_text(p, "imsi"),
        msc=_text(p, "msc"),
        mcc=_text(p, "mcc"),
        mnc=_text(p, "mnc"),
        cn=_text(p, "cn"),
        net=_text(p, "net"),
        rcn=_text(p, "rcn"),
        rnet=_text(p, "rnet"),
        calltime=_duration(p, "calltime"),
        callmenu=_text(p, "callmenu"),
        ringtime=_duration(p, "ringtime"),
        params=p,
    )


def _required(value: T | None) -> T:
    # decode() already refused events without their required fields; an empty one lands here.
    if value is None:
        raise PermanentError("a required field is empty")
    return value


def _plausible(name: str, value: datetime | None, latest: datetime) -> datetime | None:
    if value is not None and not _EARLIEST <= value <= latest:
        raise PermanentError(
            f"{name} {value.isoformat()} is implausible: before 2000 or over a day after its receipt"
        )
    return value


def _present(p: dict[str, str], name: str) -> str | None:
    value = p.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _text(p: dict[str, str], name: str) -> str | None:
    value = p.get(name)
    return value if value else None


def _int(p: dict[str, str], name: str, limit: int = _INT32) -> int | None:
    value = _present(p, name)
    if value is None:
        return None
    if not _INT.fullmatch(value):
        raise PermanentError(f"{name} {value[:40]!r} is not a whole number")
    number = int(value)
    if not -limit <= number < limit:
        raise PermanentError(f"{name} {value[:40]!r} is out of range")
    return number


def _unix(p: dict[str, str], name: str) -> datetime | None:
    value = _present(p, name)
    if value is None:
        return None
    if not _UNIX.fullmatch(value):
        raise PermanentError(f"{name} {value[:40]!r} is not a unix time")
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (OverflowError, ValueError, OSError):
        raise PermanentError(f"{name} {value[:40]!r} is out of range") from None


def _local_time(p: dict[str, str], name: str, tz: ZoneInfo) -> datetime | None:
    value = _present(p, name)
    if value is None:
        return None
    match = _LOCAL_TIME.fullmatch(value)
    if match:
        day, month, year, hour, minute, second = map(int, match.groups())
        if len(match.group(3)) == 2:
            # strptime's %y: 69-99 are the 1900s, 00-68 the 2000s.
            year += 1900 if year >= 69 else 2000
        try:
            return datetime(year, month, day, hour, minute, second, tzinfo=tz)
        except ValueError:
            pass  # out of range: strptime below refuses it too, and the error is the same
    for fmt in _LOCAL_TIME_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    raise PermanentError(f"{name} {value[:40]!r} is not DD.MM.YY hh:mm:ss")


def _decimal(p: dict[str, str], name: str) -> Decimal | None:
    value = _present(p, name)
    if value is None:
        return None
    try:
        number = Decimal(value.replace(",", "."))
    except InvalidOperation:
        raise PermanentError(f"{name} {value[:40]!r} is not a number") from None
    if not number.is_finite():
        raise PermanentError(f"{name} {value[:40]!r} is not a finite number")
    return number


def _duration(p: dict[str, str], name: str) -> int | None:
    """Seconds, from `N`, `mm:ss` or `hh:mm:ss` (the vendor does not say which it sends)."""
    value = _present(p, name)
    if value is None:
        return None
    match = _DURATION.fullmatch(value)
    if not match:
        raise PermanentError(f"{name} {value[:40]!r} is not a duration")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total >= _INT32:
        raise PermanentError(f"{name} {value[:40]!r} is out of range")
    return total


def _comment(cmt: str | None) -> tuple[str | None, timedelta | None]:
    """Split the `overtime: mm:ss` line a voice message adds off the client's comment."""
    if not cmt:
        return None, None
    match = _OVERTIME.search(cmt)
    if not match:
        return cmt, None
    overtime = timedelta(minutes=int(match.group(1)), seconds=int(match.group(2)))
    rest = (cmt[: match.start()] + cmt[match.end() :]).rstrip("\r\n")
    return rest or None, overtime
