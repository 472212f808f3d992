"""The simulator's callbacks read as the gateway's, its events are new rows each run, and its
verification names what is missing, duplicated or dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cli import gateway
from cli.gateway import TEXT, TRANSPORTS, Run
from cli.verify import Key, judge
from smsc.protocol.decode import decode
from smsc.protocol.fields import Format, HashAlgorithm, Kind
from smsc.protocol.normalize import CallConfirmation, IncomingMessage, StatusEvent, normalize
from smsc.protocol.signature import verify
from tests.payloads import CONTROL, PY_CODEC, SECRET, digest

START = datetime(2026, 11, 29, 23, 0, 0, 123000, tzinfo=UTC)
MOSCOW = ZoneInfo("Europe/Moscow")
HLR = ("imsi", "msc", "mcc", "mnc", "cn", "net", "rcn", "rnet")
VOICE = ("calltime", "callmenu", "ringtime")
TYPES = {Kind.STATUS: StatusEvent, Kind.INCOMING: IncomingMessage, Kind.CALL: CallConfirmation}


def run_of(
    started: datetime = START,
    algorithm: HashAlgorithm | None = HashAlgorithm.MD5,
    default_charset: str = "windows-1251",
    transports: tuple[tuple[Format, str | None], ...] = TRANSPORTS,
) -> Run:
    return Run(started, algorithm, SECRET, default_charset, MOSCOW, transports)


@pytest.mark.parametrize("algorithm", list(HashAlgorithm))
@pytest.mark.parametrize("default_charset", ["windows-1251", "utf-8", "koi8-r"])
def test_every_callback_decodes_verifies_and_is_plausible(
    algorithm: HashAlgorithm, default_charset: str
) -> None:
    """Each of the 24 default events reads back as its kind with the parameters it was built with,
    carries the vendor's hash of its control string, and normalizes (times plausible) on receipt."""
    run = run_of(algorithm=algorithm, default_charset=default_charset)
    for i in range(24):
        ev = gateway.event(run, i)
        cb = gateway.callback(run, ev)
        decoded = decode(cb.body, cb.query, cb.content_type, default_charset)
        assert (decoded.kind, decoded.fmt) == (ev.kind, ev.fmt)
        assert {k: decoded.params[k] for k in ev.params} == ev.params
        charset = ev.charset or default_charset
        control = ":".join([*(ev.params[f] for f in CONTROL[ev.kind.value]), SECRET])
        assert decoded.params[algorithm.value] == digest(algorithm.value, control.encode(PY_CODEC[charset]))
        assert decoded.params["simulate"] == "1795993200123"
        verify(decoded, algorithm, SECRET)
        assert isinstance(normalize(decoded, MOSCOW, START + timedelta(seconds=30)), TYPES[ev.kind])
        assert (
            f"{algorithm.value}={SECRET}" in cb.query
        )  # the handler URL carries the secret, as the gateway's


def test_default_events_cover_each_kind_in_each_transport_with_extras_and_cyrillic() -> None:
    """24 events: each kind once in each of the 8 transports; statuses with HLR and voice-menu extras,
    an error and a template flag; incoming SMS in Cyrillic, answers and not; calls with waitcall=1."""
    run = run_of()
    events = [gateway.event(run, i) for i in range(24)]
    assert sorted((ev.kind, ev.fmt, ev.charset or "") for ev in events) == sorted(
        (kind, fmt, charset or "") for kind in Kind for fmt, charset in TRANSPORTS
    )
    statuses = [ev.params for ev in events if ev.kind is Kind.STATUS]
    assert sum(all(p.get(f) for f in HLR) for p in statuses) == 2
    assert sum(all(p.get(f) for f in VOICE) for p in statuses) == 2
    assert sum(p.get("err") == "6" and p["status"] == "20" for p in statuses) == 2
    assert {p["time"] for p in statuses} == {"30.11.26 02:00:00"}  # Moscow time of the run's start
    incoming = [ev.params for ev in events if ev.kind is Kind.INCOMING]
    assert {p["mes"] for p in incoming} == {TEXT}
    assert sum("sms_id" in p for p in incoming) == 4
    assert {ev.params["waitcall"] for ev in events if ev.kind is Kind.CALL} == {"1"}


@pytest.mark.parametrize(
    "gap",
    [
        timedelta(0),
        timedelta(milliseconds=1),
        timedelta(milliseconds=999),
        timedelta(seconds=1),
        timedelta(hours=30),
    ],
)
def test_two_runs_never_share_a_key(gap: timedelta) -> None:
    """The events of two runs started `gap` apart (none: one run) have distinct keys: new rows each run."""
    first = {(ev.kind, ev.key) for ev in (gateway.event(run_of(), i) for i in range(3000))}
    assert len(first) == 3000
    if gap:
        second = {(ev.kind, ev.key) for ev in (gateway.event(run_of(START + gap), i) for i in range(3000))}
        assert first.isdisjoint(second)


@pytest.mark.parametrize(
    ("fmt", "charset", "expected"),
    [
        ("all", "all", TRANSPORTS),
        ("form", "all", TRANSPORTS[:4]),
        ("all", "utf-8", ((Format.FORM, "utf-8"), (Format.XML, "utf-8"), (Format.JSON, "utf-8"))),
        ("all", "koi8-r", ((Format.FORM, "koi8-r"),)),
        ("json", "windows-1251", ((Format.JSON, "windows-1251"),)),
        ("xml", "koi8-r", ()),
    ],
)
def test_format_and_charset_choose_transports(
    fmt: str, charset: str, expected: tuple[tuple[Format, str | None], ...]
) -> None:
    """--format and --charset pick the gateway's transports; XML and JSON never go in koi8-r."""
    assert gateway.transports(fmt, charset) == expected


EVENTS = [gateway.event(run_of(), i) for i in range(3)]  # a status, an incoming SMS, a call
ONCE: dict[Key, int] = {(ev.kind, ev.key): 1 for ev in EVENTS}


@pytest.mark.parametrize(
    ("rows", "dead", "unidentified", "verdict"),
    [
        (ONCE, set(), 0, (3, [], [], [], True)),
        ({**ONCE, (Kind.INCOMING, EVENTS[1].key): 0}, set(), 0, (2, [1], [], [], False)),
        ({k: v for k, v in ONCE.items() if k[0] is not Kind.CALL}, set(), 0, (2, [2], [], [], False)),
        ({**ONCE, (Kind.STATUS, EVENTS[0].key): 2}, set(), 0, (2, [], [0], [], False)),
        (ONCE, {("call", EVENTS[2].params["phone"])}, 0, (2, [], [], [2], False)),
        ({}, {("status", EVENTS[0].params["id"])}, 0, (0, [1, 2], [], [0], False)),
        (ONCE, {("status", "1")}, 0, (3, [], [], [], True)),  # another event's dead letter
        (ONCE, set(), 1, (3, [], [], [], False)),
    ],
)
def test_judge_names_missing_duplicated_and_dead_lettered_events(
    rows: dict[Key, int],
    dead: set[tuple[str, str]],
    unidentified: int,
    verdict: tuple[int, list[int], list[int], list[int], bool],
) -> None:
    """Exactly one row under its key and no dead letter is the only verdict that passes."""
    got = judge(EVENTS, rows, dead, unidentified)
    assert (got.stored_once, got.missing, got.duplicated, got.dead_lettered, got.ok) == verdict
