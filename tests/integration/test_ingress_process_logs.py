"""The real `smsc-ingest serve` process fed malformed HTTP over raw sockets: every line it logs is one
JSON object, none holds the secret, slow headers are cut off in every pre-forked process, and with
aiohttp's pure-Python parser raw bytes in the query string are stored as escapes."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from tests.integration.conftest import service_env
from tests.integration.procs import COMMAND, environment, spawn
from tests.integration.servers import free_port, port_open, wait_until
from tests.payloads import SAMPLES, SECRET, build, sign

SIGNED = build("status")


class LoggedIngress:
    """`smsc-ingest serve` on a free port, its stderr written to `log`."""

    def __init__(self, log: Path, processes: int = 1, **overrides: str) -> None:
        self.port = free_port()
        self.log = log
        args = [COMMAND, "serve", "--port", str(self.port), "--workers", str(processes)]
        with log.open("wb") as out:
            self.proc = spawn(args, environment(**overrides), stderr=out.fileno())
        wait_until(lambda: port_open(self.port), 20, "the ingress")

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; returns the exit code."""
        self.proc.terminate()
        return self.proc.wait(timeout=90)

    def lines(self) -> list[str]:
        return self.log.read_text("utf-8").splitlines()

    def send(self, raw: bytes, *, close_early: bool = False) -> bytes:
        """Send `raw` and return the status line of the answer; with `close_early`, leave at once."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s:
            s.sendall(raw)
            if close_early:
                return b""
            return s.makefile("rb").readline()


def post(target: bytes, body: bytes, head: bytes = b"") -> bytes:
    return (
        b"POST "
        + target
        + b" HTTP/1.1\r\nHost: smsc.test\r\n"
        + head
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


QUERY = f"md5={SECRET}".encode()
SECRET_ID = {**SAMPLES["status"], "id": f"1{SECRET}"}
# Each request makes the ingress write exactly one log line; the comment says which.
MALFORMED = {
    "bad-request-line": b"GE T /smsc?" + QUERY + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request_malformed
    "invalid-method": b"P@ST /smsc?" + QUERY + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request_malformed
    "bad-header": b"POST /smsc?" + QUERY + b" HTTP/1.1\r\nHo st: " + SECRET.encode() + b"\r\n\r\n",
    "header-too-long": post(b"/smsc?" + QUERY, b"", b"X-A: " + SECRET.encode() * 1000 + b"\r\n"),
    "bad-chunk": b"POST /smsc?"
    + QUERY
    + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz"
    + SECRET.encode()
    + b"\r\n0\r\n\r\n",
    "control-byte-in-query": b"POST /smsc?" + QUERY + b"&x=\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-connect": b"CONNECT http://h/smsc?" + QUERY + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form": post(
        b"http://smsc.test/smsc?" + QUERY, b"id=1&phone=79998887766&status=1"
    ),  # request_rejected 403
    "connect-authority": b"CONNECT smsc.test:443 HTTP/1.1\r\nHost: x\r\n\r\n",  # 400 unknown path
    "connect-handler": b"CONNECT /smsc HTTP/1.1\r\nHost: x\r\n\r\n",  # 405
    "secret-in-path": post(b"/" + SECRET.encode() + b"?" + QUERY, b""),  # 400 unknown path, path scrubbed
    "upper-secret-in-path": post(b"/" + SECRET.upper().encode(), b""),
    "gzip": post(b"/smsc?" + QUERY, b"\x1f\x8b" + SECRET.encode(), b"Content-Encoding: gzip\r\n"),  # 415
    "signed-id-holding-the-secret": post(  # request_stored, the id scrubbed from the line
        b"/smsc?" + QUERY,
        b"id=%s&phone=%s&status=1&md5=%s"
        % (SECRET_ID["id"].encode(), SECRET_ID["phone"].encode(), sign("status", SECRET_ID, "md5").encode()),
        b"Content-Type: application/x-www-form-urlencoded\r\n",
    ),
}
LEAVES_MID_BODY = (
    b"POST /smsc?" + QUERY + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nid=" + SECRET.encode()
)


@pytest.fixture
def ingress(tmp_path: Path, redis_db: Redis, db: Any) -> LoggedIngress:
    """Two pre-forked ingress processes sharing a port, logging to a file (stopped by the test)."""
    return LoggedIngress(tmp_path / "ingress.log", processes=2)


def test_every_log_line_is_json_and_none_holds_the_secret(ingress: LoggedIngress) -> None:
    """Malformed requests (bad request line, header, chunk, method, target; the secret in the query,
    path, headers, body) and a client leaving mid-body each make one JSON line, without the secret."""
    for name, raw in MALFORMED.items():
        answer = ingress.send(raw)
        assert answer.startswith(b"HTTP/1."), (name, answer)
        assert answer.split(b" ")[1] != b"500", name
    ingress.send(LEAVES_MID_BODY, close_early=True)
    # The line of the client that left is written after it left: wait for it before stopping.
    wait_until(lambda: len(ingress.lines()) == 1 + len(MALFORMED) + 1, 20, "one line per request")
    assert ingress.stop() == 0
    lines = ingress.lines()
    events = [json.loads(line) for line in lines]  # each line is one JSON object
    assert all(isinstance(e, dict) for e in events)
    assert [e for e in events if SECRET.lower() in json.dumps(e).lower()] == []
    assert [e["event"] for e in events].count("ingress_starting") == 1
    assert len(lines) == 1 + len(MALFORMED) + 1, lines
    malformed = [e for e in events if e["event"] == "request_malformed"]
    assert {(e["code"], e["logger"]) for e in malformed} == {(400, "aiohttp.server")}
    assert len(malformed) == 7
    assert {e["reason"] for e in events if e["event"] == "request_rejected" and e["code"] == 400} == {
        "unknown path",
        "body broken: ConnectionResetError",
    }
    assert [e["id"] for e in events if e["event"] == "request_stored"] == ["1redacted"]


def test_slow_headers_are_cut_off_in_every_process(tmp_path: Path, redis_db: Redis, db: Any) -> None:
    """With `serve --workers 2`, every connection that does not finish its headers within
    SMSC_READ_TIMEOUT is closed, whichever process the kernel gave it to."""
    ingress = LoggedIngress(tmp_path / "ingress.log", processes=2, SMSC_READ_TIMEOUT="1")
    try:
        connections = [socket.create_connection(("127.0.0.1", ingress.port), timeout=20) for _ in range(8)]
        for s in connections:
            s.sendall(b"POST /smsc HTTP/1.1\r\nHost: x\r\n")
        # aiohttp's own keep-alive default is 75 s: the socket timeout of 20 s is well below it.
        assert [s.recv(100) for s in connections] == [b""] * 8
        for s in connections:
            s.close()
    finally:
        assert ingress.stop() == 0


@pytest.fixture
def python_parser(tmp_path: Path, redis_db: Redis, db: Any) -> Iterator[LoggedIngress]:
    """One ingress process on aiohttp's pure-Python HTTP parser (AIOHTTP_NO_EXTENSIONS=1), which lets
    bytes over 0x7F through in a query string, as some deployments of aiohttp do."""
    server = LoggedIngress(tmp_path / "ingress.log", AIOHTTP_NO_EXTENSIONS="1")
    yield server
    assert server.stop() == 0


def test_raw_bytes_in_the_query_are_stored_as_escapes(python_parser: LoggedIngress, redis_db: Redis) -> None:
    """A query string holding raw bytes over 0x7F is stored percent-encoded (no lone surrogates), and
    the parameters read from it are those that came: windows-1251 0xCF 0xF0 is `Пр`."""
    r = build("status", "form", "windows-1251")
    target = b"/smsc?" + r.query.encode("ascii") + b"&account=\xcf\xf0"
    answer = python_parser.send(post(target, r.body, b"Content-Type: " + r.content_type.encode() + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 200"), answer
    queue = Queue(service_env()["SMSC_QUEUE"], connection=redis_db, serializer=JSONSerializer)
    ((raw,),) = [job.args[0] for job in queue.get_jobs()]
    assert raw["query"].endswith("&account=%CF%F0")
    assert raw["query"].isascii()
    assert dict(parse_qsl(raw["query"], encoding="cp1251"))["account"] == "Пр"


def test_a_bad_chunk_mid_body_is_400_with_the_python_parser(python_parser: LoggedIngress) -> None:
    """With the pure-Python parser a chunk that breaks after the headers reaches the handler as a
    payload error: 400 at once, one line naming the error's class."""
    with socket.create_connection(("127.0.0.1", python_parser.port), timeout=20) as s:
        s.sendall(
            b"POST /smsc HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answers = s.makefile("rb")
        assert answers.readline().startswith(b"HTTP/1.1 100")
        answers.readline()
        s.sendall(b"3\r\nid=\r\nzz\r\n")
        assert answers.readline().startswith(b"HTTP/1.1 400")
    events = [json.loads(line) for line in python_parser.lines()]
    assert [e["reason"] for e in events if e["event"] == "request_rejected"] == [
        "body broken: TransferEncodingError"
    ]
