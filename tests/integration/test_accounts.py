"""Many accounts through the real ingress, worker and PostgreSQL: each account's secrets, hash,
charset and time zone; unknown accounts 403; rotation; and, in a real `serve --workers 2`, SIGHUP
reloading the file without dropping a request in flight, a bad file kept out at start and on reload."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from ingress.app import create_app
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.integration.procs import COMMAND, environment
from tests.integration.servers import wait_until
from tests.integration.test_ingress import post, status_line
from tests.integration.test_ingress_process_logs import LoggedIngress
from tests.integration.test_ingress_process_logs import post as raw_post
from tests.payloads import PY_CODEC, SAMPLES, SECRET, Request, build, sign
from workers.runner import run

# Two accounts that differ in everything; shop is halfway through a rotation.
SHOP_NEW, SHOP_OLD, WEB = "shop-New_1", "shop-Old_0", "web-Secret_7"
ACCOUNTS = f"""
[accounts.shop]
secrets = ["{SHOP_NEW}", "{SHOP_OLD}"]
hash = "sha1"
charset = "utf-8"
tz = "Asia/Vladivostok"

[accounts.web]
secret = "{WEB}"
hash = "crc32"
charset = "koi8-r"
tz = "UTC"
"""
ALL_SECRETS = (SECRET, SHOP_NEW, SHOP_OLD, WEB)


def unnamed_charset(kind: str, params: dict[str, str], algorithm: str, secret: str, charset: str) -> Request:
    """A form callback from a handler URL naming no charset: only the account says how to read it."""
    fields = {**params, algorithm: sign(kind, params, algorithm, secret, PY_CODEC[charset])}
    body = urlencode(fields, encoding=PY_CODEC[charset]).encode("ascii")
    return Request(body, f"{algorithm}={secret}", "application/x-www-form-urlencoded")


def settings_for(path: Path, text: str = ACCOUNTS, **overrides: str) -> Settings:
    path.write_text(text, encoding="utf-8")
    return Settings.from_env(service_env(SMSC_ACCOUNTS_FILE=str(path), **overrides))


def queued(redis_db: Redis) -> list[dict[str, Any]]:
    """The raw requests in the queue, as the ingress wrote them."""
    queue = Queue(service_env()["SMSC_QUEUE"], connection=redis_db, serializer=JSONSerializer)
    return [raw for job in queue.get_jobs() for raw in job.args[0]]


def enqueue(redis_db: Redis, raw: RawRequest, settings: Settings) -> None:
    """Queue `raw` as the ingress would."""
    pipe = redis_db.pipeline()
    stage_job(pipe, build_job([raw], settings), settings)
    pipe.execute()


@pytest.fixture
async def shop_and_web(tmp_path: Path, redis_db: Redis, db: Any) -> Any:
    """An ingress (in this process) for `default`, shop and web."""
    settings = settings_for(tmp_path / "accounts.toml")
    async with TestClient(TestServer(create_app(settings))) as client:
        yield settings, client


async def test_each_account_reads_with_its_own_settings(shop_and_web: Any, db: Any, redis_db: Redis) -> None:
    """A status's `time` is read in its account's time zone, an incoming SMS's text in its account's
    charset, each verified with its account's secret and algorithm; the job names the account."""
    settings, client = shop_and_web
    status = {**SAMPLES["status"], "ts": ""}  # `time` alone: its zone is the account's
    incoming = SAMPLES["incoming"]
    sent = [
        ("/smsc/shop", unnamed_charset("status", {**status, "id": "1"}, "sha1", SHOP_NEW, "utf-8")),
        ("/smsc/web", unnamed_charset("status", {**status, "id": "2"}, "crc32", WEB, "koi8-r")),
        ("/smsc", unnamed_charset("status", {**status, "id": "3"}, "md5", SECRET, "windows-1251")),
        ("/smsc/shop", unnamed_charset("incoming", {**incoming, "id": "11"}, "sha1", SHOP_NEW, "utf-8")),
        ("/smsc/web", unnamed_charset("incoming", {**incoming, "id": "12"}, "crc32", WEB, "koi8-r")),
    ]
    for path, request in sent:
        assert await post(client, request, path) == (200, "OK\n"), path
    assert [raw["account"] for raw in queued(redis_db)] == ["shop", "web", "default", "shop", "web"]
    run(settings, burst=True)
    # 14.11.23 22:13:20 local: Vladivostok is UTC+10, Moscow UTC+3.
    assert sorted(db.execute("SELECT message_id, account, status_at FROM status_events").fetchall()) == [
        (1, "shop", datetime(2023, 11, 14, 12, 13, 20, tzinfo=UTC)),
        (2, "web", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (3, "default", datetime(2023, 11, 14, 19, 13, 20, tzinfo=UTC)),
    ]
    assert sorted(db.execute("SELECT id, account, text FROM incoming_messages").fetchall()) == [
        (11, "shop", "Привет, мир!"),
        (12, "web", "Привет, мир!"),
    ]


async def test_the_same_event_in_two_accounts_is_two_rows(shop_and_web: Any, db: Any) -> None:
    """Message 1001 of shop and message 1001 of web are two messages; a copy within one account is
    still one row, its copy recorded as a duplicate of that account."""
    settings, client = shop_and_web
    for _ in range(2):
        assert (await post(client, build("status", algorithm="sha1", secret=SHOP_NEW), "/smsc/shop"))[
            0
        ] == 200
    assert (await post(client, build("status", algorithm="crc32", secret=WEB), "/smsc/web"))[0] == 200
    assert (await post(client, build("status"), "/smsc"))[0] == 200
    run(settings, burst=True)
    assert sorted(db.execute("SELECT account, message_id, status FROM status_events").fetchall()) == [
        ("default", 1001, 1),
        ("shop", 1001, 1),
        ("web", 1001, 1),
    ]
    assert sorted(db.execute("SELECT account, message_id FROM messages").fetchall()) == [
        ("default", 1001),
        ("shop", 1001),
        ("web", 1001),
    ]
    assert db.execute("SELECT account FROM duplicate_requests").fetchall() == [("shop",)]


@pytest.mark.parametrize(
    ("path", "secret", "algorithm", "code"),
    [
        ("/smsc/shop", SHOP_NEW, "sha1", 200),
        ("/smsc/shop", SHOP_OLD, "sha1", 200),  # the rotation: the old secret still works
        ("/smsc/shop", "shop-Third_2", "sha1", 403),
        ("/smsc/shop", SHOP_NEW, "md5", 403),  # another account's algorithm
        ("/smsc/shop", WEB, "sha1", 403),  # another account's secret
        ("/smsc/web", SHOP_NEW, "crc32", 403),
        ("/smsc", SHOP_NEW, "md5", 403),
        ("/smsc/default", SECRET, "md5", 200),  # `default` by its name too
        ("/smsc/shop/", SHOP_OLD, "sha1", 200),  # a trailing slash
        ("/smsc//x/../shop", SHOP_OLD, "sha1", 200),  # a variant of the path
        ("/smsc/sh%6Fp", SHOP_OLD, "sha1", 200),  # an escaped letter is that letter
        ("/smsc/other", SECRET, "md5", 403),  # an account nobody configured
        ("/smsc/SHOP", SHOP_NEW, "sha1", 403),  # names are case-sensitive
        ("/smsc/unknown", SECRET, "md5", 403),
        ("/smsc/shop.ru", SECRET, "md5", 403),  # no account name: still not a 404
        ("/smsc/%D0%BC%D0%B0%D0%B3", SECRET, "md5", 403),
        ("/smsc/%00", SECRET, "md5", 403),
        ("/smsc/" + "a" * 300, SECRET, "md5", 403),
        ("/smsc/shop/x", SHOP_NEW, "sha1", 400),  # not a handler path
    ],
)
async def test_what_each_account_path_answers(
    shop_and_web: Any, path: str, secret: str, algorithm: str, code: int
) -> None:
    """An account accepts only its own secrets and algorithm; an unknown account or a name that is
    none is 403, another path 400: never 404."""
    _, client = shop_and_web
    answer, text = await post(client, build("status", algorithm=algorithm, secret=secret), path)
    assert answer == code, text
    if code == 403 and path.startswith("/smsc/") and path not in ("/smsc/shop", "/smsc/web"):
        assert text == "forbidden: unknown account\n"


@pytest.mark.parametrize(
    ("secret", "code"),
    [("default-New_1", 200), (SECRET, 200), ("default-Third_2", 403)],
    ids=["new", "old", "third"],
)
async def test_the_secret_of_post_smsc_rotates_through_the_file(
    tmp_path: Path, redis_db: Redis, db: Any, secret: str, code: int
) -> None:
    """[accounts.default] in the file gives POST /smsc two secrets: the environment's old one and a
    new one; any other is refused."""
    text = f'[accounts.default]\nsecrets = ["default-New_1", "{SECRET}"]\n'
    settings = settings_for(tmp_path / "accounts.toml", text)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await post(client, build("status", secret=secret)))[0] == code


async def test_another_method_on_an_account_path_is_405(shop_and_web: Any) -> None:
    """GET on an account's handler path is the handler's 405, as on /smsc."""
    _, client = shop_and_web
    for path in ("/smsc/shop", "/smsc/nobody"):
        resp = await client.get(path)
        assert (resp.status, resp.headers["Allow"]) == (405, "POST")


async def test_an_unknown_account_is_refused_before_its_body_is_read(shop_and_web: Any) -> None:
    """A 403 for an unknown account comes at once, without waiting for a body that never comes."""
    _, client = shop_and_web
    line = await status_line(client, b"POST /smsc/nobody HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    assert line.startswith(b"HTTP/1.1 403")


async def test_no_secret_of_the_account_is_stored(shop_and_web: Any, redis_db: Redis) -> None:
    """Both secrets of a rotating account are redacted from the stored query and body, wherever
    they appear (here in fields of their own)."""
    _, client = shop_and_web
    params = {**SAMPLES["status"], "sender": SHOP_OLD, "comment": SHOP_NEW.upper()}
    request = build("status", algorithm="sha1", secret=SHOP_NEW, params=params)
    assert (await post(client, request, "/smsc/shop"))[0] == 200
    (raw,) = queued(redis_db)
    stored = RawRequest.from_json(raw)
    text = (stored.query + stored.body.decode("ascii")).lower()
    assert [s for s in ALL_SECRETS if s.lower() in text] == []
    assert "redacted" in stored.query


async def test_metrics_count_known_accounts_and_unknown_as_one(shop_and_web: Any) -> None:
    """The request counter's `account` label is a configured account or `unknown`: a name nobody
    configured never becomes a label value."""
    _, client = shop_and_web
    await post(client, build("status", algorithm="sha1", secret=SHOP_NEW), "/smsc/shop")
    await post(client, build("status"), "/smsc")
    for name in ("nobody", "nobody-else"):
        await post(client, build("status"), f"/smsc/{name}")
    exposition = await (await client.get("/metrics")).text()
    lines = [line for line in exposition.splitlines() if line.startswith("smsc_ingress_requests_total{")]
    accounts = {line.split('account="')[1].split('"')[0] for line in lines}
    assert accounts == {"shop", "default", "unknown"}
    assert [line for line in lines if 'account="unknown"' in line] == [
        'smsc_ingress_requests_total{account="unknown",code="403",kind="unknown",reason="account"} 2.0'
    ]


def test_a_job_for_an_account_the_worker_does_not_know_is_a_dead_letter(
    tmp_path: Path, db: Any, redis_db: Redis
) -> None:
    """A raw request naming an account missing from the worker's file (removed since) is kept as a
    dead letter saying so, to replay once the file is fixed."""
    settings = settings_for(tmp_path / "accounts.toml")
    r = build("status")
    raw = RawRequest("r-gone", 1700000000.0, r.query, r.content_type, r.body, account="gone")
    enqueue(redis_db, raw, settings)
    labels = {"kind": "status", "outcome": "dead_letter"}
    before = REGISTRY.get_sample_value("smsc_worker_events_total", {**labels, "account": "unknown"}) or 0
    run(settings, burst=True)
    assert db.execute("SELECT request_id, reason, account FROM dead_letters").fetchall() == [
        ("r-gone", "unknown account 'gone'", "gone")
    ]
    # The worker's counter: a name its file does not hold is `unknown`, never a label value of its own.
    assert (
        REGISTRY.get_sample_value("smsc_worker_events_total", {**labels, "account": "unknown"}) == before + 1
    )
    assert REGISTRY.get_sample_value("smsc_worker_events_total", {**labels, "account": "gone"}) is None
    assert db.execute("SELECT count(*) FROM status_events").fetchone() == (0,)


def test_a_worker_learns_an_account_added_since_it_started(tmp_path: Path, db: Any, redis_db: Redis) -> None:
    """An account added to the file after the worker read it is found when its first job comes."""
    path = tmp_path / "accounts.toml"
    settings = settings_for(path, "")
    path.write_text(ACCOUNTS, encoding="utf-8")
    r = build("status", algorithm="sha1", secret=SHOP_NEW)
    raw = RawRequest("r-new", 1700000000.0, r.query, r.content_type, r.body, account="shop")
    enqueue(redis_db, raw, settings)
    run(settings, burst=True)
    assert db.execute("SELECT message_id FROM status_events").fetchall() == [(1001,)]
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


@pytest.mark.parametrize(
    "command", [["serve", "--port", "1"], ["worker", "--burst"]], ids=["serve", "worker"]
)
def test_a_bad_file_at_start_is_refused_naming_the_line(tmp_path: Path, command: list[str]) -> None:
    """The ingress (before it listens) and a worker with a broken accounts file exit 2, naming the
    file and the line, and without the secret that the file does hold."""
    path = tmp_path / "accounts.toml"
    path.write_text(f'[accounts.shop]\nsecret = "{WEB}"\nhash = "sha256"\n', encoding="utf-8")
    env = environment(SMSC_ACCOUNTS_FILE=str(path))
    done = subprocess.run([COMMAND, *command], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert f"{path}, line 3: account 'shop': hash must be md5, sha1 or crc32" in err
    assert WEB.lower() not in err.lower()


def test_sighup_reloads_every_process(tmp_path: Path, redis_db: Redis, db: Any) -> None:
    """In `serve --workers 2`: SIGHUP to the main process reloads the file in both processes; a bad
    file on reload keeps the accounts as they were, each process logging why; a request whose body
    is still arriving during a reload is answered 200; no line holds a secret."""
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNTS, encoding="utf-8")
    ingress = LoggedIngress(tmp_path / "ingress.log", processes=2, SMSC_ACCOUNTS_FILE=str(path))
    try:
        late = "late-Secret_3"
        signed = build("status", algorithm="md5", secret=late)
        head = b"Content-Type: " + signed.content_type.encode() + b"\r\n"
        target = b"/smsc/late?" + signed.query.encode()
        # Many connections: the kernel spreads them over both processes.
        assert {ingress.send(raw_post(target, signed.body, head))[9:12] for _ in range(16)} == {b"403"}

        # A request to shop whose handler waits for its body when the reload removes shop: the
        # 100 Continue says the handler has it.
        shop = build("status", algorithm="sha1", secret=SHOP_NEW)
        in_flight = socket.create_connection(("127.0.0.1", ingress.port), timeout=20)
        request = raw_post(
            b"/smsc/shop?" + shop.query.encode(), shop.body, head + b"Expect: 100-continue\r\n"
        )
        headers, body = request.split(b"\r\n\r\n", 1)
        in_flight.sendall(headers + b"\r\n\r\n")
        answers = in_flight.makefile("rb")
        assert answers.readline().startswith(b"HTTP/1.1 100")
        answers.readline()

        path.write_text(f'[accounts.late]\nsecret = "{late}"\n', encoding="utf-8")
        ingress.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: events(ingress).count("accounts_reloaded") == 2, 20, "both processes reloaded")
        in_flight.sendall(body)
        assert answers.readline().startswith(b"HTTP/1.1 200")
        in_flight.close()
        assert {ingress.send(raw_post(target, signed.body, head))[9:12] for _ in range(16)} == {b"200"}

        path.write_text(f'[accounts.late]\nsecret = "{late}"\nhash = "sha256"\n', encoding="utf-8")
        ingress.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: events(ingress).count("accounts_reload_failed") == 2, 20, "both processes failed")
        assert {ingress.send(raw_post(target, signed.body, head))[9:12] for _ in range(16)} == {b"200"}
    finally:
        assert ingress.stop() == 0
    lines = [json.loads(line) for line in ingress.lines()]
    failed = [e for e in lines if e["event"] == "accounts_reload_failed"]
    assert {e["reason"] for e in failed} == {
        f"{path}, line 3: account 'late': hash must be md5, sha1 or crc32"
    }
    assert {tuple(e["kept"]) for e in failed} == {("default", "late")}
    assert {tuple(e["accounts"]) for e in lines if e["event"] == "accounts_reloaded"} == {("default", "late")}
    stored = [e for e in lines if e["event"] == "request_stored"]
    assert [e["account"] for e in stored] == ["shop"] + ["late"] * 32
    text = "\n".join(ingress.lines()).lower()
    assert [s for s in (*ALL_SECRETS, late) if s.lower() in text] == []


def events(ingress: LoggedIngress) -> list[str]:
    return [json.loads(line)["event"] for line in ingress.lines()]


def test_dead_letters_of_one_account_are_listed_and_replayed(
    tmp_path: Path, db: Any, redis_db: Redis
) -> None:
    """`dead-letter list` shows each dead letter's account; `--account` picks one account's, and
    `replay --account` requeues them once the file names it, leaving the others waiting."""
    path = tmp_path / "accounts.toml"
    settings = settings_for(path)
    r = build("status", secret="gone-Secret")
    enqueue(
        redis_db,
        RawRequest("r-gone", 1700000000.0, r.query, r.content_type, r.body, account="gone"),
        settings,
    )
    bad = build("status", params={**SAMPLES["status"], "ts": "soon"})
    enqueue(redis_db, RawRequest("r-bad", 1700000000.0, bad.query, bad.content_type, bad.body), settings)
    run(settings, burst=True)

    listed = cli("dead-letter", "list", "--account", "gone")
    assert listed.returncode == 0
    lines = listed.stdout.decode().splitlines()
    assert lines[-1] == "1 dead letter(s)"
    assert lines[0].endswith(
        "PermanentError: unknown account 'gone' (account=gone kind=status id=1001 phone=79998887766)"
    )
    everything = cli("dead-letter", "list").stdout.decode()
    assert "(account=default kind=status id=1001 phone=79998887766)" in everything

    path.write_text(ACCOUNTS + '\n[accounts.gone]\nsecret = "gone-Secret"\n', encoding="utf-8")
    replaying = cli("replay", "--account", "gone")
    assert replaying.returncode == 0
    assert replaying.stdout.decode().splitlines()[-1] == "1 dead letter(s) replayed"
    run(settings, burst=True)
    assert db.execute("SELECT account, message_id FROM status_events").fetchall() == [("gone", 1001)]
    assert db.execute("SELECT request_id FROM dead_letters WHERE replayed_at IS NULL").fetchall() == [
        ("r-bad",)
    ]


async def test_stats_of_one_account(shop_and_web: Any, db: Any) -> None:
    """`stats --account` counts that account's events, messages and dead letters only."""
    settings, client = shop_and_web
    shop = [
        build("status", algorithm="sha1", secret=SHOP_NEW, params={**SAMPLES["status"], "id": str(i)})
        for i in (1, 2)
    ]
    for request in shop:
        assert (await post(client, request, "/smsc/shop"))[0] == 200
    for request in (build("status"), build("call"), build("status", params={**SAMPLES["status"], "ts": "x"})):
        assert (await post(client, request))[0] == 200
    run(settings, burst=True)
    figures = {
        name: json.loads(cli("stats", "--json", *args).stdout)
        for name, args in (("all", []), ("shop", ["--account", "shop"]), ("web", ["--account", "web"]))
    }
    assert {name: f["account"] for name, f in figures.items()} == {"all": None, "shop": "shop", "web": "web"}
    assert {name: f["events_stored"]["status"]["24h"] for name, f in figures.items()} == {
        "all": 3,
        "shop": 2,
        "web": 0,
    }
    assert {name: f["events_stored"]["call"]["24h"] for name, f in figures.items()} == {
        "all": 1,
        "shop": 0,
        "web": 0,
    }
    assert {name: f["messages_24h"]["delivered"] for name, f in figures.items()} == {
        "all": 3,
        "shop": 2,
        "web": 0,
    }
    assert {name: f["dead_letters"]["waiting"] for name, f in figures.items()} == {
        "all": 1,
        "shop": 0,
        "web": 0,
    }
    text = cli("stats", "--account", "shop").stdout.decode().splitlines()
    assert text[-1].startswith("Account                 shop (")


async def test_trace_shows_the_account(shop_and_web: Any, redis_db: Redis) -> None:
    """`trace` names each row's account; a message id in two accounts is two messages, and
    `--account` shows one account's alone."""
    settings, client = shop_and_web
    assert (await post(client, build("status", algorithm="sha1", secret=SHOP_NEW), "/smsc/shop"))[0] == 200
    assert (await post(client, build("status"), "/smsc"))[0] == 200
    (shop_rid, _) = [raw["rid"] for raw in queued(redis_db)]
    run(settings, burst=True)
    phone = SAMPLES["status"]["phone"]
    by_rid = cli("trace", shop_rid).stdout.decode().splitlines()
    assert by_rid[1].startswith("  stored first by this request: status_events message_id=1001 ")
    assert " err=- account=shop (received " in by_rid[1]
    both = cli("trace", "--phone", phone, "--id", "1001").stdout.decode().splitlines()
    assert [line.rsplit(", account ", 1)[1] for line in both if line.startswith("message 1001")] == [
        "default",
        "shop",
    ]
    assert sorted(line.split(" account=")[1].split()[0] for line in both if "status_events" in line) == [
        "default",
        "shop",
    ]
    one = cli("trace", "--phone", phone, "--id", "1001", "--account", "shop").stdout.decode().splitlines()
    (message,) = [line for line in one if line.startswith("message 1001")]
    assert message.endswith(", account shop")
    assert [line.split(" account=")[1].split()[0] for line in one if "status_events" in line] == ["shop"]
    assert cli("trace", shop_rid, "--account", "shop").returncode == 2


@pytest.mark.parametrize("name", ["shop.ru", "", "a" * 65, "магазин"])
def test_a_bad_account_argument_is_refused(name: str) -> None:
    """`--account` takes an account name only: anything else is a usage error, exit code 2."""
    done = cli("dead-letter", "list", "--account", name)
    assert done.returncode == 2
    assert b"is not an account name" in done.stderr


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([COMMAND, *args], env=environment(), capture_output=True, timeout=60, check=False)
