"""`smsc-ingest simulate` against a real `serve` process, real workers, Redis and the test database."""

from __future__ import annotations

import asyncio
import itertools
import queue
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis import Redis

from tests.integration.procs import COMMAND, Ingress, environment, start_worker
from tests.integration.servers import ThrowawayRedis, free_port

Db = psycopg.Connection[tuple[Any, ...]]
TABLES = {"status": "status_events", "incoming": "incoming_messages", "call": "call_confirmations"}
# (fmt, charset) as each request's echoed handler URL parameters are stored: one row of each per kind.
TRANSPORTS = [
    (None, "koi8-r"),
    (None, "utf-8"),
    (None, "windows-1251"),
    (None, None),
    ("2", "utf-8"),
    ("2", "windows-1251"),
    ("3", "utf-8"),
    ("3", "windows-1251"),
]
TEXT = 'Привет! Ёлка & "ключ" <42> + проверка = 100%'
FAST = ("--retry-after", "0.05")  # the gateway's 4 minutes between tries, compressed


def simulate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `smsc-ingest simulate ARGS` as an operator would, with the test deployment's settings."""
    return subprocess.run(
        [COMMAND, "simulate", *args], env=environment(**env), capture_output=True, text=True, timeout=120
    )


def tally(out: str) -> dict[str, str]:
    """The `name: value` lines of the output (the tally and the verification), by name."""
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith(" "))


def expect(out: str, **lines: str) -> None:
    """The tally lines named (underscores for spaces) read as given."""
    got = tally(out)
    wanted = {name.replace("_", " "): value for name, value in lines.items()}
    assert {name: got.get(name) for name in wanted} == wanted, out


def stored(db: Db, kind: str) -> list[tuple[str | None, str | None]]:
    """The (fmt, charset) of each stored row of `kind`, sorted."""
    rows = db.execute(f"SELECT params->>'fmt', params->>'charset' FROM {TABLES[kind]}").fetchall()
    return sorted(rows, key=repr)


def counts(db: Db) -> dict[str, int]:
    """Rows per table, dead letters included."""
    return {
        t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in [*TABLES.values(), "dead_letters"]
    }  # type: ignore[index]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="md5-default-charset-windows-1251"),
        pytest.param({"SMSC_HASH": "sha1", "SMSC_CHARSET": "utf-8"}, id="sha1-default-charset-utf-8"),
        pytest.param({"SMSC_HASH": "crc32", "SMSC_CHARSET": "koi8-r"}, id="crc32-default-charset-koi8-r"),
        pytest.param({"SMSC_SECRET": "", "SMSC_ALLOW_UNSIGNED": "1"}, id="unsigned-on-purpose"),
    ],
)
def test_three_copies_of_every_kind_format_and_charset_are_verified_stored_once(
    overrides: dict[str, str], db: Db, redis_db: Redis
) -> None:
    """24 events (3 kinds x 8 transports), 3 copies each, all answered 200; --verify finds each event
    stored exactly once, Cyrillic intact, HLR and voice-menu extras in their columns, and exits 0."""
    ingress = Ingress(1, **overrides)
    # The worker reads an unnamed charset as its own SMSC_CHARSET: it shares the ingress's settings.
    start_worker(**overrides)
    done = simulate("--url", f"{ingress.base}/smsc", "--copies", "3", "--verify", **overrides)
    assert done.returncode == 0, done.stdout + done.stderr
    expect(
        done.stdout,
        events="24 (status 8, incoming 8, call 8), 3 copies each",
        sent="72 (resent: 0)",
        **{"200": "72"},
        refused="none",
        no_answer="0",
        never_acknowledged="0",
        stored_once="24",
        missing="0",
        duplicated="0",
        **{"dead-lettered": "0"},
    )
    for kind in TABLES:
        assert stored(db, kind) == sorted(TRANSPORTS, key=repr), kind
    assert db.execute("SELECT DISTINCT text FROM incoming_messages").fetchall() == [(TEXT,)]
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (8,)
    hlr = "SELECT count(*) FROM status_events WHERE cn = 'Россия' AND mnc = '01' AND rnet = 'Билайн'"
    assert db.execute(hlr).fetchone() == (2,)
    voice = "SELECT count(*) FROM status_events WHERE calltime = 62 AND callmenu = '1-2-0' AND ringtime = 12"
    assert db.execute(voice).fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


@pytest.mark.parametrize(
    ("args", "expected", "kinds"),
    [
        (["--format", "form", "--charset", "koi8-r", "--events", "5"], [(None, "koi8-r")], (2, 2, 1)),
        (["--format", "json"], [("3", "utf-8"), ("3", "windows-1251")], (2, 2, 2)),
        (
            ["--format", "xml", "--charset", "utf-8", "--events", "7", "--rate", "50"],
            [("2", "utf-8")],
            (3, 2, 2),
        ),
        (
            ["--charset", "windows-1251", "--concurrency", "1"],
            [(None, "windows-1251"), ("2", "windows-1251"), ("3", "windows-1251")],
            (3, 3, 3),
        ),
    ],
)
def test_format_charset_and_events_choose_what_is_sent(
    args: list[str],
    expected: list[tuple[str | None, str | None]],
    kinds: tuple[int, int, int],
    db: Db,
    drain: Callable[[], None],
) -> None:
    """--format and --charset choose the transports, --events the number of events, the kinds in turn."""
    ingress = Ingress()
    done = simulate("--url", f"{ingress.base}/smsc", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    drain()
    for kind, n in zip(TABLES, kinds, strict=True):
        rows = stored(db, kind)
        assert len(rows) == n, kind
        assert set(rows) <= set(expected), kind
    assert {r for kind in TABLES for r in stored(db, kind)} == set(expected)


@pytest.mark.parametrize(
    ("args", "env", "answer"),
    [
        ([], {"SMSC_SECRET": "not-the-secret"}, "403 forbidden: invalid signature"),
        (["--hash", "sha1"], {}, "403 forbidden: invalid signature"),  # the ingress says no more
    ],
)
def test_refusals_are_resent_until_the_tries_are_spent(
    args: list[str], env: dict[str, str], answer: str, db: Db, drain: Callable[[], None]
) -> None:
    """Refused with 403 (a secret or hash rotated on one side only), each copy is tried --tries times,
    the tally counts the 403s and the events never acknowledged, and the exit code is 1."""
    ingress = Ingress()
    done = simulate(
        "--url", f"{ingress.base}/smsc", "--events", "6", "--copies", "2", "--tries", "3", *FAST, *args, **env
    )
    assert done.returncode == 1, done.stdout + done.stderr
    expect(
        done.stdout,
        sent="36 (resent: 24)",
        **{"200": "0"},
        refused="403 × 36",
        never_acknowledged="6",
    )
    (refusal,) = [line for line in done.stdout.splitlines() if line.startswith("403")]
    assert refusal.startswith(f"{answer} (first such answer: ")
    assert "not-the-secret" not in done.stdout + done.stderr
    drain()
    assert counts(db) == dict.fromkeys([*TABLES.values(), "dead_letters"], 0)


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """The lines of `stream` as they come (None at its end), read by a thread of their own."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_503s_while_redis_is_down_are_resent_until_stored_once(
    db: Db, throwaway_redis: ThrowawayRedis
) -> None:
    """While Redis is down the ingress answers 503; the simulator resends each copy until Redis is back,
    then every event is acknowledged and --verify finds it stored exactly once."""
    ingress = Ingress(REDIS_URL=throwaway_redis.url)
    throwaway_redis.kill()
    args = ["--url", f"{ingress.base}/smsc", "--events", "6", "--copies", "2", "--retry-after", "0.2"]
    proc = subprocess.Popen(
        [COMMAND, "simulate", *args, "--verify", "--deadline", "90"],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        lines = lines_of(proc.stdout)
        while not seen or not seen[-1].startswith("503 "):
            line = lines.get(timeout=60)
            assert line is not None, "\n".join(seen)
            seen.append(line)
        throwaway_redis.start()
        start_worker(REDIS_URL=throwaway_redis.url)
        proc.wait(timeout=150)
        while (line := lines.get(timeout=10)) is not None:
            seen.append(line)
    finally:
        proc.kill()  # nothing left running if the test failed half-way
        proc.wait(timeout=20)
        proc.stdout.close()
    out = "\n".join(seen)
    assert proc.returncode == 0, out
    got = tally(out)
    assert got["refused"].startswith("503 × "), out
    resent = int(got["sent"].split("resent: ")[1].rstrip(")"))
    assert resent >= 1
    assert got["sent"] == f"{12 + resent} (resent: {resent})"
    expect(
        out, **{"200": "12"}, never_acknowledged="0", stored_once="6", missing="0", **{"dead-lettered": "0"}
    )
    assert counts(db) == {
        "status_events": 2,
        "incoming_messages": 2,
        "call_confirmations": 2,
        "dead_letters": 0,
    }


@pytest.mark.parametrize(
    ("worker", "verdict", "dead"),
    [
        pytest.param(None, {"stored once": "0", "missing": "24", "dead-lettered": "0"}, 0, id="no-worker"),
        # The forms naming no charset go in the ingress's windows-1251; such a worker cannot read the
        # Cyrillic ones (an incoming SMS and a voice message's status) and dead-letters them.
        pytest.param(
            {"SMSC_CHARSET": "utf-8"},
            {"stored once": "22", "missing": "0", "dead-lettered": "2"},
            2,
            id="worker-with-another-charset",
        ),
    ],
)
def test_verify_fails_on_events_not_stored(
    worker: dict[str, str] | None, verdict: dict[str, str], dead: int, db: Db, redis_db: Redis
) -> None:
    """Events acknowledged but never stored, or dead-lettered, fail --verify: named, counted, exit 1."""
    ingress = Ingress()
    if worker is not None:
        start_worker(**worker)
    done = simulate("--url", f"{ingress.base}/smsc", "--verify", "--verify-timeout", "3")
    assert done.returncode == 1, done.stdout + done.stderr
    got = tally(done.stdout)
    assert {k: got[k] for k in verdict} == verdict, done.stdout
    assert got["never acknowledged"] == "0"
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (dead,)
    named = {
        line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("  dead-lettered")
    }
    stored_refs = db.execute("SELECT coalesce(event_ref, phone), kind FROM dead_letters").fetchall()
    assert {(name.split()[1], name.split()[0]) for name in named} == set(stored_refs)


@pytest.mark.parametrize(
    ("answers", "code", "expected"),
    [
        # The gateway stops on 404 as on 200: no copy is resent, and no event is acknowledged.
        (lambda n: 404, 1, {"sent": "6 (resent: 0)", "refused": "404 × 6", "never acknowledged": "3"}),
        # Anything else is resent: the first try of each body refused with 500, the second taken.
        (
            lambda n: 500 if n == 1 else 200,
            0,
            {"sent": "9 (resent: 3)", "refused": "500 × 3", "200": "6", "never acknowledged": "0"},
        ),
    ],
)
async def test_a_404_is_final_and_any_other_refusal_is_resent(
    answers: Callable[[int], int], code: int, expected: dict[str, str]
) -> None:
    """Against a handler answering as scripted (the n-th request with a body gets `answers(n)`), copies
    are identical and resent exactly as the gateway resends them."""
    seen: Counter[bytes] = Counter()

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen[body] += 1
        return web.Response(status=answers(seen[body]))

    app = web.Application()
    app.router.add_post("/smsc", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        proc = await asyncio.create_subprocess_exec(
            COMMAND, "simulate", "--url", str(server.make_url("/smsc")), "--events", "3", "--copies", "2",
            *FAST, env=environment(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == code, out.decode() + err.decode()
    got = tally(out.decode())
    assert {k: got[k] for k in expected} == expected
    assert len(seen) == 3  # three events, each of its copies byte for byte the same


async def test_copies_are_interleaved_not_back_to_back() -> None:
    """Copies of one event are spread among other events' requests, as the gateway's repeats are."""
    order: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        order.append(await request.read())
        return web.Response()

    app = web.Application()
    app.router.add_post("/smsc", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        proc = await asyncio.create_subprocess_exec(
            COMMAND, "simulate", "--url", str(server.make_url("/smsc")), "--events", "60", "--copies", "2",
            "--concurrency", "1", env=environment(), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert len(order) == 120
    assert set(Counter(order).values()) == {2}
    assert sum(a == b for a, b in itertools.pairwise(order)) < 10


def test_a_second_run_makes_new_rows(db: Db, drain: Callable[[], None]) -> None:
    """Two runs of the simulator store two sets of events: its ids are new each time."""
    ingress = Ingress()
    for _ in range(2):
        assert simulate("--url", f"{ingress.base}/smsc", "--events", "3").returncode == 0
    drain()
    for table in TABLES.values():
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,), table


@pytest.mark.parametrize("host", [{}, {"SMSC_HOST": "127.0.0.1"}, {"SMSC_HOST": "0.0.0.0"}])  # noqa: S104
def test_the_url_defaults_to_serve_s_address(host: dict[str, str], db: Db) -> None:
    """Without --url or SMSC_SIMULATE_URL the simulator posts to SMSC_HOST (this machine for 0.0.0.0)
    on SMSC_PORT, where `serve` listens."""
    ingress = Ingress()
    done = simulate("--events", "3", SMSC_PORT=str(ingress.port), **host)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"to http://127.0.0.1:{ingress.port}/smsc, md5" in done.stdout.splitlines()[0]
    expect(done.stdout, **{"200": "3"})


def test_no_answer_is_resent_then_counted() -> None:
    """Where nothing listens, each copy is tried --tries times, counted as no answer, and the exit is 1."""
    url = f"http://127.0.0.1:{free_port()}/smsc"
    done = simulate("--events", "3", "--tries", "2", *FAST, SMSC_SIMULATE_URL=url)
    assert done.returncode == 1
    expect(
        done.stdout,
        sent="6 (resent: 3)",
        refused="none",
        no_answer="6 (ClientConnectorError × 6)",
        never_acknowledged="3",
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--events", "0"], "'0' is not a whole number from 1 to 100000"),
        (["--events", "100001"], "'100001' is not a whole number from 1 to 100000"),
        (["--copies", "51"], "'51' is not a whole number from 1 to 50"),
        (["--tries", "0"], "'0' is not a whole number from 1 to 50"),
        (["--concurrency", "1.5"], "'1.5' is not a whole number from 1 to 1000"),
        (["--rate", "0"], "'0' is not a number from 0.1 to 100000"),
        (["--retry-after", "-1"], "'-1' is not a number from 0.01 to 240"),
        (["--deadline", "12001"], "'12001' is not a number from 1 to 12000"),
        (["--verify-timeout", "0"], "'0' is not a number from 1 to 3600"),
        (["--format", "csv"], "argument --format: invalid choice: 'csv'"),
        (["--charset", "latin1"], "argument --charset: invalid choice: 'latin1'"),
        (["--hash", "sha256"], "argument --hash: invalid choice: 'sha256'"),
        (["--format", "xml", "--charset", "koi8-r"], "--format xml is not sent in koi8-r"),
        (["--url", "http://h/smsc?md5=x"], "is not an http(s) URL without a query"),
        (["--url", "ftp://h/smsc"], "is not an http(s) URL without a query"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_code_2(args: list[str], says: str) -> None:
    """A bad option sends nothing and is refused in one line on stderr with exit code 2."""
    done = simulate(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert says in done.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SMSC_SIMULATE_URL": "h:80"}, "SMSC_SIMULATE_URL: 'h:80' is not an http(s) URL"),
        ({"SMSC_PORT": "0"}, "SMSC_PORT: '0' is not a port"),
        ({"SMSC_SECRET": ""}, "SMSC_SECRET is not set"),
        ({"SMSC_HASH": "sha256"}, "SMSC_HASH must be one of md5, sha1, crc32"),
    ],
)
def test_a_bad_variable_is_refused_with_exit_code_2(env: dict[str, str], says: str) -> None:
    """A bad variable sends nothing: its last line on stderr says why (after the log line), exit code 2."""
    done = simulate(**env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert says in done.stderr.splitlines()[-1]
