"""The callbacks `smsc-ingest simulate` sends: events of the three kinds, encoded and signed as the
gateway does (see PROTOCOL.md): every field of each kind, HLR and voice-menu extras, Cyrillic text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlencode
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from smsc.protocol.fields import CHARSETS, Format, HashAlgorithm, Kind, codec_for
from smsc.protocol.signature import sign

# Event numbers of one run are `first + i`: `first` is the run's start in milliseconds times this, so
# the ids of two runs never meet (a run holds at most this many events) and still fit a bigint.
MAX_EVENTS: Final = 100_000
KINDS: Final = (Kind.STATUS, Kind.INCOMING, Kind.CALL)

# Every way the gateway transmits: a form in each of the three charsets, XML and JSON in the two it
# uses with `fmt` (never koi8-r), and a form from a handler URL naming no charset, sent in the one
# assumed then (SMSC_CHARSET).
TRANSPORTS: Final[tuple[tuple[Format, str | None], ...]] = (
    (Format.FORM, "utf-8"),
    (Format.FORM, "koi8-r"),
    (Format.FORM, "windows-1251"),
    (Format.FORM, None),
    (Format.XML, "utf-8"),
    (Format.XML, "windows-1251"),
    (Format.JSON, "utf-8"),
    (Format.JSON, "windows-1251"),
)
FMT_PARAM: Final = {Format.XML: "2", Format.JSON: "3"}
# The handler URL's own parameter naming the run: the gateway sends it back, so every row and dead
# letter of a run carries it (params->>'simulate').
RUN_PARAM: Final = "simulate"
# Sent as JSON numbers, as the gateway's own fmt=3 answers write integers; everything else as strings.
JSON_NUMBERS: Final = frozenset(
    {"id", "status", "ts", "err", "cnt", "type", "flag", "sms_id", "sent", "waitcall"}
)
OUR_NUMBER: Final = "79001234567"
SMSC_CENTRE: Final = "79168999100"
# `&`, `<`, `"`, `+`, `%` and `=` exercise each format's escaping; every letter exists in all three charsets.
TEXT: Final = 'Привет! Ёлка & "ключ" <42> + проверка = 100%'


@dataclass(frozen=True)
class Run:
    """What every event of one run shares: its clock, its numbers and how it is signed."""

    started: datetime
    algorithm: HashAlgorithm | None  # None: unsigned, on purpose (SMSC_ALLOW_UNSIGNED)
    secret: str
    default_charset: str
    tz: ZoneInfo
    transports: tuple[tuple[Format, str | None], ...]

    @property
    def tag(self) -> str:
        """The run's name in the handler URL: its start in milliseconds."""
        return str(int(self.started.timestamp() * 1000))

    @property
    def first(self) -> int:
        return int(self.tag) * MAX_EVENTS

    @property
    def ts(self) -> int:
        """Every event of the run happened at its start: plausible for the worker, however long it runs."""
        return int(self.started.timestamp())


@dataclass(frozen=True)
class Event:
    """Event `number` of a run, its parameters as the gateway fills them in."""

    number: int
    kind: Kind
    fmt: Format
    charset: str | None
    params: dict[str, str]

    @property
    def key(self) -> tuple[int | str, ...]:
        """What makes it one row: (message id, phone, status), the incoming id, (phone, ts) of a call."""
        p = self.params
        if self.kind is Kind.STATUS:
            return (int(p["id"]), p["phone"], int(p["status"]))
        if self.kind is Kind.INCOMING:
            return (int(p["id"]),)
        return (p["phone"], int(p["ts"]))

    @property
    def ref(self) -> str:
        """How a person and a dead letter name it: the id, or a call's phone."""
        return self.params["phone"] if self.kind is Kind.CALL else self.params["id"]

    def describe(self, run: Run) -> str:
        charset = self.charset or f"unnamed charset ({run.default_charset})"
        return f"{self.kind.value} {self.ref} ({self.fmt.value}, {charset})"


@dataclass(frozen=True)
class Callback:
    """One event as it goes over the wire."""

    query: str
    body: bytes
    content_type: str


def transports(fmt: str, charset: str) -> tuple[tuple[Format, str | None], ...]:
    """The transports of `--format` and `--charset` (`all` for each); the unnamed one only with `all`."""
    return tuple(
        (f, c) for f, c in TRANSPORTS if fmt in ("all", f.value) and (charset == "all" or c == charset)
    )


def event(run: Run, i: int) -> Event:
    """The run's event `i`: the kinds in turn, each kind taking the transports and its variants in turn."""
    kind = KINDS[i % len(KINDS)]
    j = i // len(KINDS)
    fmt, charset = run.transports[j % len(run.transports)]
    number = run.first + i
    # 79 and 9 digits: a Russian mobile, new for each event of a run and for each run of that second.
    phone = f"79{number % 10**9:09d}"
    ts = str(run.ts)
    if kind is Kind.STATUS:
        params = _status(j, str(number), phone, ts, run.started.astimezone(run.tz))
    elif kind is Kind.INCOMING:
        params = {"id": str(number), "phone": phone, "mes": TEXT, "to": OUR_NUMBER, "smsc": SMSC_CENTRE}
        params |= {"sent": str(run.ts - 2), "time": ts}
        if j % 2:
            params["sms_id"] = str(number - 1)  # an answer to a message of ours
    else:
        params = {"waitcall": "1", "phone": phone, "ts": ts}
    return Event(i, kind, fmt, charset, params)


def _status(j: int, number: str, phone: str, ts: str, local: datetime) -> dict[str, str]:
    """A delivered SMS, an undeliverable one, an HLR answer, a voice message: in turn."""
    base = {"id": number, "phone": phone, "time": local.strftime("%d.%m.%y %H:%M:%S"), "ts": ts}
    variant = j % 4
    if variant == 0:
        return base | {
            "status": "1",
            "cnt": "1",
            "type": "0",
            "cost": "1.25",
            "flag": "0",
            "sender": "SMSC.RU",
        }
    if variant == 1:
        return base | {
            "status": "20",
            "err": "6",
            "syserr": "absent subscriber",
            "cnt": "2",
            "type": "0",
            "cost": "2.50",
            "flag": str(1 << 5 | 1 << 8 | 1 << 9),  # second balance, a transactional template
            "sender": "SMSC.RU",
            "cmt": "заказ 42",
        }
    if variant == 2:
        return base | {
            "status": "1",
            "type": "4",
            "flag": "4",
            "cost": "0.20",
            "imsi": "250011234567890",
            "msc": "79168999100",
            "mcc": "250",
            "mnc": "01",
            "cn": "Россия",
            "net": "МТС",
            "rcn": "Казахстан",
            "rnet": "Билайн",
        }
    return base | {
        "status": "1",
        "cnt": "74",
        "type": "7",
        "flag": "7",
        "cost": "3.00",
        "dtmf": "1#",
        "cmt": "звонок клиенту\novertime: 00:14",
        "calltime": "01:02",
        "callmenu": "1-2-0",
        "ringtime": "12",
    }


def callback(run: Run, ev: Event) -> Callback:
    """`ev` POSTed to `<url>?charset=..&fmt=..&simulate=<run>&<hash>=<secret>` in its format.

    The gateway sends the handler URL's parameters back in the body, the hash one carrying the hash.
    """
    codec = CHARSETS[ev.charset] if ev.charset else codec_for(run.default_charset)
    url: dict[str, str] = {"charset": ev.charset} if ev.charset else {}
    if ev.fmt in FMT_PARAM:
        url["fmt"] = FMT_PARAM[ev.fmt]
    url[RUN_PARAM] = run.tag
    fields = {**ev.params, **url}
    if run.algorithm is not None:
        url[run.algorithm.value] = run.secret
        fields[run.algorithm.value] = sign(ev.kind, fields, run.algorithm, run.secret, codec)
    query = urlencode(url)
    if ev.fmt is Format.FORM:
        body = urlencode(fields, encoding=codec).encode("ascii")
        return Callback(query, body, "application/x-www-form-urlencoded")
    if ev.fmt is Format.JSON:
        values = {k: int(v) if k in JSON_NUMBERS else v for k, v in fields.items()}
        body = json.dumps(values, ensure_ascii=False).encode(codec)
        return Callback(query, body, f"application/json; charset={ev.charset}")
    xml = "<result>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items()) + "</result>"
    return Callback(query, xml.encode(codec), f"application/xml; charset={ev.charset}")
