"""`smsc-ingest simulate` against a real `serve` process, a worker and the test database."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from redis import Redis

from tests.integration.procs import COMMAND, Ingress, environment, run_workers
from tests.integration.servers import free_port

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
TEXT = "Привет! Это проверка smsc-ingest."


def simulate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `smsc-ingest simulate ARGS` as an operator would, with the test deployment's settings."""
    return subprocess.run(
        [COMMAND, "simulate", *args], env=environment(**env), capture_output=True, text=True, timeout=120
    )


def transports(db: Db, kind: str) -> list[tuple[str | None, str | None]]:
    """The (fmt, charset) of each stored row of `kind`, sorted."""
    rows = db.execute(f"SELECT params->>'fmt', params->>'charset' FROM {TABLES[kind]}").fetchall()
    return sorted(rows, key=repr)


def refs(out: str, kind: str) -> set[str]:
    """The ids (phones for calls) the per-request lines name for `kind`."""
    words = [line.split() for line in out.splitlines() if line.startswith(f"{kind} ")]
    return {w[w.index("copy") - 1] for w in words}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="md5-default-charset-windows-1251"),
        pytest.param({"SMSC_HASH": "sha1", "SMSC_CHARSET": "utf-8"}, id="sha1-default-charset-utf-8"),
        pytest.param({"SMSC_HASH": "crc32", "SMSC_CHARSET": "koi8-r"}, id="crc32-default-charset-koi8-r"),
        pytest.param({"SMSC_SECRET": "", "SMSC_ALLOW_UNSIGNED": "1"}, id="unsigned-on-purpose"),
    ],
)
def test_every_kind_format_and_charset_lands_as_its_row(
    overrides: dict[str, str], db: Db, redis_db: Redis
) -> None:
    """Each of the 3 kinds x 8 transports is answered 200 and stored as its own row, Cyrillic intact."""
    ingress = Ingress(1, **overrides)
    done = simulate("--url", f"{ingress.base}/smsc", **overrides)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 * 8 + 1
    assert all(line.endswith("copy 1/1  200") for line in lines[:-1])
    assert lines[-1] == f"24 request(s) to {ingress.base}/smsc: 200 × 24"
    # The worker reads an unnamed charset as its own SMSC_CHARSET: it must share the ingress's settings.
    run_workers(1, **overrides)
    for kind in TABLES:
        assert transports(db, kind) == sorted(TRANSPORTS, key=repr), kind
    assert db.execute("SELECT DISTINCT text FROM incoming_messages").fetchall() == [(TEXT,)]
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


def test_repeated_requests_still_make_one_row_per_event(db: Db, drain: Callable[[], None]) -> None:
    """With --repeat 3 every copy is answered 200, and each event the lines name is exactly one row."""
    ingress = Ingress()
    done = simulate("--url", f"{ingress.base}/smsc", "--count", "5", "--repeat", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5 * 3 * 3 + 1
    assert sum(" copy 3/3 " in line for line in lines) == 15
    assert lines[-1].endswith(": 200 × 45")
    drain()
    status = db.execute("SELECT message_id::text FROM status_events").fetchall()
    incoming = db.execute("SELECT id::text FROM incoming_messages").fetchall()
    calls = db.execute("SELECT phone FROM call_confirmations").fetchall()
    assert sorted(r[0] for r in status) == sorted(refs(done.stdout, "status"))
    assert sorted(r[0] for r in incoming) == sorted(refs(done.stdout, "incoming"))
    assert sorted(r[0] for r in calls) == sorted(refs(done.stdout, "call"))
    assert len(refs(done.stdout, "status")) == len(refs(done.stdout, "call")) == 5
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (5,)


def test_a_second_run_makes_new_rows(db: Db, drain: Callable[[], None]) -> None:
    """Two runs of the simulator store two sets of events: its ids are new each time."""
    ingress = Ingress()
    for _ in range(2):
        assert simulate("--url", f"{ingress.base}/smsc", "--count", "1").returncode == 0
    drain()
    for table in TABLES.values():
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,), table


def test_a_wrong_secret_exits_non_zero_showing_the_403s(db: Db, drain: Callable[[], None]) -> None:
    """Signed with another secret, every request is refused with 403, shown per line and in the total."""
    ingress = Ingress()
    done = simulate("--url", f"{ingress.base}/smsc", "--count", "2", SMSC_SECRET="not-the-secret")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2 * 3 + 1
    assert all(line.endswith("copy 1/1  403 forbidden: invalid signature") for line in lines[:-1])
    assert lines[-1] == f"6 request(s) to {ingress.base}/smsc: 403 × 6"
    assert "not-the-secret" not in done.stdout + done.stderr
    drain()
    for table in TABLES.values():
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


@pytest.mark.parametrize("host", [{}, {"SMSC_HOST": "127.0.0.1"}, {"SMSC_HOST": "0.0.0.0"}])  # noqa: S104
def test_the_url_defaults_to_serve_s_address(host: dict[str, str], db: Db) -> None:
    """Without --url or SMSC_SIMULATE_URL the simulator posts to SMSC_HOST (this machine for 0.0.0.0)
    on SMSC_PORT, where `serve` listens."""
    ingress = Ingress()
    done = simulate("--count", "1", SMSC_PORT=str(ingress.port), **host)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"3 request(s) to http://127.0.0.1:{ingress.port}/smsc: 200 × 3"


def test_no_answer_stops_at_the_first_request() -> None:
    """Where nothing listens, the simulator says so after one request and exits 1."""
    url = f"http://127.0.0.1:{free_port()}/smsc"
    done = simulate(SMSC_SIMULATE_URL=url)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("copy 1/1  no answer (ClientConnectorError)")
    assert lines[-1] == f"1 request(s) to {url}: no answer × 1"


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--count", "0"], {}, "'0' is not a whole number from 1 to 1000"),
        (["--count", "1001"], {}, "'1001' is not a whole number from 1 to 1000"),
        (["--repeat", "51"], {}, "'51' is not a whole number from 1 to 50"),
        (["--url", "http://h/smsc?md5=x"], {}, "is not an http(s) URL without a query"),
        (["--url", "ftp://h/smsc"], {}, "is not an http(s) URL without a query"),
        ([], {"SMSC_SIMULATE_URL": "h:80"}, "SMSC_SIMULATE_URL: 'h:80' is not an http(s) URL"),
        ([], {"SMSC_PORT": "0"}, "SMSC_PORT: '0' is not a port"),
        ([], {"SMSC_SECRET": ""}, "SMSC_SECRET is not set"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(args: list[str], env: dict[str, str], says: str) -> None:
    """A bad option or variable sends nothing and is refused in one line on stderr with exit code 2."""
    done = simulate(*args, **env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert says in done.stderr.splitlines()[-1]
