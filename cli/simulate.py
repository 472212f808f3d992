"""`smsc-ingest simulate`: signed callbacks of every kind, format and charset, as the gateway sends them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit
from xml.sax.saxutils import escape

from cli import arguments
from cli.render import printable
from smsc.exceptions import ConfigError
from smsc.protocol.fields import CHARSETS, Format, Kind, codec_for
from smsc.protocol.signature import sign
from smsc.settings import Settings

if TYPE_CHECKING:
    import aiohttp

MAX_COUNT = 1000
MAX_REPEAT = 50  # the gateway's own number of tries
REQUEST_TIMEOUT_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 5.0
ANSWER_CHARS = 200  # of the ingress's answer, shown next to a refusal

# Every way the gateway transmits: a form in each of the three charsets, XML and JSON in the two it
# uses with `fmt`, and a form from a handler URL naming no charset, sent in the one assumed then.
TRANSPORTS: tuple[tuple[Format, str | None], ...] = (
    (Format.FORM, "utf-8"),
    (Format.FORM, "koi8-r"),
    (Format.FORM, "windows-1251"),
    (Format.FORM, None),
    (Format.XML, "utf-8"),
    (Format.XML, "windows-1251"),
    (Format.JSON, "utf-8"),
    (Format.JSON, "windows-1251"),
)
FMT_PARAM = {Format.XML: "2", Format.JSON: "3"}
PHONE = "79998887766"
OUR_NUMBER = "79001234567"
TEXT = "Привет! Это проверка smsc-ingest."


@dataclass(frozen=True)
class Callback:
    """One request as it goes over the wire, and what the summary line says of it."""

    kind: Kind
    fmt: Format
    charset: str
    ref: str
    query: str
    body: bytes
    content_type: str


def register(commands: argparse._SubParsersAction[arguments.Parser]) -> None:
    """Add the `simulate` subcommand and its options."""
    parser = commands.add_parser(
        "simulate", help="send signed callbacks of every kind, format and charset to an ingress"
    )
    parser.add_argument(
        "--url",
        type=handler_url,
        help="the handler URL without its query (SMSC_SIMULATE_URL, else built from SMSC_HOST and "
        "SMSC_PORT: http://127.0.0.1:8080/smsc)",
    )
    parser.add_argument(
        "--count",
        type=_bounded(MAX_COUNT),
        default=len(TRANSPORTS),
        help=f"events of each kind, each a new row, taking the {len(TRANSPORTS)} formats and charsets "
        f"in turn (default {len(TRANSPORTS)}: one in each; at most {MAX_COUNT})",
    )
    parser.add_argument(
        "--repeat",
        type=_bounded(MAX_REPEAT),
        default=1,
        help=f"send each request this many times, as the gateway's retries do (at most {MAX_REPEAT})",
    )


def handler_url(text: str) -> str:
    """An http(s) URL with a host and no query: the simulator adds charset, fmt and the hash."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL without a query (e.g. http://127.0.0.1:8080/smsc)"
        )
    return text


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Send every callback `repeat` times, print a line per request and a total; 0 if all got 200."""
    url = target(args.url)
    if not settings.secret and not settings.allow_unsigned:
        raise ConfigError("SMSC_SECRET is not set: the simulator signs with the ingress's secret")
    callbacks = build_all(settings, args.count, datetime.now(UTC))
    answers = asyncio.run(_send_all(url, callbacks, args.repeat))
    print(f"{sum(answers.values())} request(s) to {url}: {_tally(answers)}")
    return 0 if set(answers) <= {"200"} else 1


def target(given: str | None) -> str:
    """The --url, else SMSC_SIMULATE_URL, else the URL of `serve` with its SMSC_HOST and SMSC_PORT."""
    if given is not None or os.environ.get("SMSC_SIMULATE_URL"):
        return arguments.from_env(given, "SMSC_SIMULATE_URL", "", handler_url)
    port = arguments.from_env(None, "SMSC_PORT", "8080", arguments.port)
    host = arguments.from_env(None, "SMSC_HOST", "127.0.0.1", str)
    # `serve` may listen on every address; the simulator then talks to this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (read, not bound)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/smsc"


def build_all(settings: Settings, count: int, now: datetime) -> list[Callback]:
    """`count` events of each kind, each with its own id (or phone for a call), in turn per transport."""
    # The start in milliseconds, times MAX_COUNT: each run's events are new rows, and ids fit a bigint.
    first = int(now.timestamp() * 1000) * MAX_COUNT
    return [
        build(settings, kind, *TRANSPORTS[i % len(TRANSPORTS)], first + i, now)
        for i in range(count)
        for kind in Kind
    ]


def build(
    settings: Settings, kind: Kind, fmt: Format, charset: str | None, number: int, now: datetime
) -> Callback:
    """Event `number` of `kind`, posted to `<url>?charset=..&fmt=..&<hash>=<secret>` in `fmt`.

    The gateway sends the handler URL's parameters back in the body, the hash one carrying the hash.
    """
    codec = CHARSETS[charset] if charset else codec_for(settings.default_charset)
    params = _event(settings, kind, number, now)
    url: dict[str, str] = {"charset": charset} if charset else {}
    if fmt in FMT_PARAM:
        url["fmt"] = FMT_PARAM[fmt]
    fields = {**params, **url}
    if settings.secret:
        algorithm = settings.hash_algorithm
        url[algorithm.value] = settings.secret
        fields[algorithm.value] = sign(kind, fields, algorithm, settings.secret, codec)
    label = charset or f"{settings.default_charset} (unnamed)"
    ref = params["phone"] if kind is Kind.CALL else params["id"]
    if fmt is Format.FORM:
        body = urlencode(fields, encoding=codec).encode("ascii")
        return Callback(kind, fmt, label, ref, urlencode(url), body, "application/x-www-form-urlencoded")
    if fmt is Format.JSON:
        body = json.dumps(fields, ensure_ascii=False).encode(codec)
        return Callback(kind, fmt, label, ref, urlencode(url), body, f"application/json; charset={charset}")
    xml = "<result>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items()) + "</result>"
    return Callback(
        kind, fmt, label, ref, urlencode(url), xml.encode(codec), f"application/xml; charset={charset}"
    )


def _event(settings: Settings, kind: Kind, number: int, now: datetime) -> dict[str, str]:
    ts = str(int(now.timestamp()))
    if kind is Kind.STATUS:
        local = now.astimezone(settings.tz).strftime("%d.%m.%y %H:%M:%S")
        return {
            "id": str(number),
            "phone": PHONE,
            "status": "1",
            "ts": ts,
            "time": local,
            "cnt": "1",
            "type": "0",
            "cost": "1.25",
            "flag": "0",
            "sender": "SMSC.RU",
        }
    if kind is Kind.INCOMING:
        return {
            "id": str(number),
            "phone": PHONE,
            "mes": TEXT,
            "to": OUR_NUMBER,
            "smsc": "79168999100",
            "sent": ts,
            "time": ts,
        }
    # A call is keyed by its phone and time: a phone of its own makes each call a new row.
    return {"waitcall": "1", "phone": f"7{number % 10**10:010d}", "ts": ts}


async def _send_all(url: str, callbacks: list[Callback], repeat: int) -> Counter[str]:
    """POST each callback `repeat` times (all once, then all again: retries come later); count answers."""
    import aiohttp

    answers: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for copy in range(1, repeat + 1):
            for cb in callbacks:
                code, detail = await _post(session, url, cb)
                answers[code] += 1
                print(
                    f"{cb.kind.value:<8} {cb.fmt.value:<4} {cb.charset:<26} {cb.ref:<17} "
                    f"copy {copy}/{repeat}  {code}{detail}"
                )
                if code == "no answer":
                    # Whatever is wrong (nothing listening, a wrong host), the rest would wait as long.
                    print(f"no answer from {url}: is the ingress running (make run)? stopping here")
                    return answers
    return answers


async def _post(session: aiohttp.ClientSession, url: str, cb: Callback) -> tuple[str, str]:
    """The answer's code, and what the ingress said when it is not 200."""
    import aiohttp

    try:
        async with session.post(
            f"{url}?{cb.query}", data=cb.body, headers={"Content-Type": cb.content_type}
        ) as resp:
            if resp.status == 200:
                return "200", ""
            said = (await resp.content.read(ANSWER_CHARS)).decode("utf-8", "replace").strip()
            return str(resp.status), f" {printable(said)}"
    except (aiohttp.ClientError, TimeoutError) as e:
        return "no answer", f" ({type(e).__name__})"


def _tally(answers: Counter[str]) -> str:
    return ", ".join(f"{code} × {n}" for code, n in sorted(answers.items())) or "nothing sent"


def _bounded(limit: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= limit:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {limit}")
        return int(text)

    return convert
