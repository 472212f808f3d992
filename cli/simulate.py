"""`smsc-ingest simulate`: a gateway simulator to point at a deployment, as a smoke test after an
install or a secret rotation. It sends events of every kind, format and charset, signed as the
gateway signs them, resends what is not answered 200 as the gateway does, prints a tally and, with
--verify, checks in PostgreSQL that each event is stored exactly once."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cli import arguments, gateway
from cli.delivery import MAX_COPIES, Schedule, Tally, deliver
from cli.gateway import KINDS, MAX_EVENTS, Callback, Run
from smsc.exceptions import ConfigError
from smsc.protocol.fields import HashAlgorithm
from smsc.settings import Settings

MAX_CONCURRENCY = 1000
MAX_RATE = 100_000.0
GATEWAY_RETRY_SECONDS = 240.0  # the gateway resends every 4 minutes...
GATEWAY_WINDOW_SECONDS = 12_000.0  # ...50 times: 3 h 20 min, the longest a run may last
SHOWN_EVENTS = 10  # events named per problem in the verification; the counts cover all


def register(commands: argparse._SubParsersAction[arguments.Parser]) -> None:
    """Add the `simulate` subcommand and its options."""
    parser = commands.add_parser(
        "simulate",
        help="a gateway simulator: signed callbacks of every kind, format and charset, resent as the "
        "gateway resends them, with a tally (and --verify: each stored exactly once)",
    )
    add = parser.add_argument
    add(
        "--url",
        type=handler_url,
        help="the handler URL without its query (SMSC_SIMULATE_URL, else built from SMSC_HOST and "
        "SMSC_PORT: http://127.0.0.1:8080/smsc)",
    )
    add(
        "--events",
        type=number(1, MAX_EVENTS, whole=True),
        help=f"distinct events, the three kinds in turn, each kind taking the chosen formats and charsets "
        f"in turn (default: one of each kind in each, 24 with all; at most {MAX_EVENTS})",
    )
    add(
        "--copies",
        type=number(1, MAX_COPIES, whole=True),
        default=1,
        help=f"send each event this many times, as the gateway repeats it, copies of different events "
        f"interleaved (default 1, at most {MAX_COPIES})",
    )
    add(
        "--rate",
        type=number(0.1, MAX_RATE),
        help="at most this many requests per second, resends included (default: no cap)",
    )
    add(
        "--concurrency",
        type=number(1, MAX_CONCURRENCY, whole=True),
        default=16,
        help=f"requests in flight at once (default 16, at most {MAX_CONCURRENCY})",
    )
    add("--format", choices=("form", "xml", "json", "all"), default="all", help="default all")
    add(
        "--charset",
        choices=("utf-8", "koi8-r", "windows-1251", "all"),
        default="all",
        help="default all, which adds a form from a handler URL naming no charset (sent in "
        "SMSC_CHARSET); XML and JSON go in utf-8 and windows-1251 only, as the gateway sends them",
    )
    add(
        "--hash",
        choices=[a.value for a in HashAlgorithm],
        help="the handler URL's hash parameter (default SMSC_HASH, else md5); the secret is SMSC_SECRET",
    )
    add(
        "--retry-after",
        type=number(0.01, GATEWAY_RETRY_SECONDS),
        default=1.0,
        help="seconds before a copy not answered 200 or 404 is resent (the gateway: 240; default 1)",
    )
    add(
        "--tries",
        type=number(1, MAX_COPIES, whole=True),
        default=MAX_COPIES,
        help=f"tries of each copy, the first included (the gateway: 50; default {MAX_COPIES})",
    )
    add(
        "--deadline",
        type=number(1, GATEWAY_WINDOW_SECONDS),
        default=120.0,
        help="seconds after which no request starts (default 120; at most 12000, the gateway's 3 h 20 min)",
    )
    add(
        "--verify",
        action="store_true",
        help="then check in PostgreSQL (DATABASE_URL) that each acknowledged event is stored exactly "
        "once and not dead-lettered",
    )
    add(
        "--verify-timeout",
        type=number(1, 3600),
        default=60.0,
        help="seconds --verify waits for the workers to store every event (default 60)",
    )


def handler_url(text: str) -> str:
    """An http(s) URL with a host and no query: the simulator adds charset, fmt and the hash."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL without a query (e.g. http://127.0.0.1:8080/smsc)"
        )
    return text


def number(low: float, high: float, *, whole: bool = False) -> Callable[[str], float]:
    """A number from `low` to `high`, a whole one if `whole`."""
    shape = r"[0-9]{1,9}" if whole else r"[0-9]{1,9}(?:\.[0-9]{1,6})?"
    what = "whole number" if whole else "number"

    def convert(text: str) -> float:
        if not re.fullmatch(shape, text) or not low <= float(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what} from {low:g} to {high:g}")
        return int(text) if whole else float(text)

    return convert


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Send, resend, tally and maybe verify; 0 if every event was acknowledged (and verified)."""
    url = target(args.url)
    if not settings.secret and not settings.allow_unsigned:
        raise ConfigError("SMSC_SECRET is not set: the simulator signs with the ingress's secret")
    chosen = gateway.transports(args.format, args.charset)
    if not chosen:
        # An argument error like argparse's: one line, exit code 2.
        print(
            f"smsc-ingest simulate: --format {args.format} is not sent in {args.charset}: the gateway "
            "uses koi8-r for forms only (see smsc-ingest simulate -h)",
            file=sys.stderr,
        )
        return 2
    algorithm = HashAlgorithm(args.hash) if args.hash else settings.hash_algorithm
    started = datetime.now(UTC)
    signed = algorithm if settings.secret else None
    sim = Run(started, signed, settings.secret, settings.default_charset, settings.tz, chosen)
    events = args.events or len(KINDS) * len(chosen)
    schedule = Schedule(args.copies, args.concurrency, args.rate, args.retry_after, args.tries, args.deadline)
    per_kind = {k.value: len(range(n, events, len(KINDS))) for n, k in enumerate(KINDS)}
    say(
        f"simulate: run {sim.tag}, {events} event(s) × {_copies(args.copies)} "
        f"to {url}, {signed.value if signed else 'unsigned'}"
    )

    def build(i: int) -> tuple[str, Callback]:
        ev = gateway.event(sim, i)
        return ev.describe(sim), gateway.callback(sim, ev)

    tally = asyncio.run(deliver(url, events, build, schedule, say))
    print_tally(tally, per_kind, args.copies, args.deadline)
    ok = not tally.unacknowledged()
    if args.verify:
        from cli.verify import verify

        acked = [gateway.event(sim, i) for i in range(events) if tally.acknowledged[i]]
        verdict = verify(settings.database_url, sim, acked, args.verify_timeout, say)
        say(f"stored once: {verdict.stored_once}")
        for label, numbers in (
            ("missing", verdict.missing),
            ("duplicated", verdict.duplicated),
            ("dead-lettered", verdict.dead_lettered),
        ):
            say(f"{label}: {len(numbers)}")
            for i in numbers[:SHOWN_EVENTS]:
                say(f"  {label}: {gateway.event(sim, i).describe(sim)}")
        if verdict.unidentified:
            say(f"dead-lettered, naming no event: {verdict.unidentified}")
        ok = ok and verdict.ok
    return 0 if ok else 1


def print_tally(tally: Tally, per_kind: dict[str, int], copies: int, deadline: float) -> None:
    """The run's numbers, one `name: value` a line."""
    kinds = ", ".join(f"{kind} {n}" for kind, n in per_kind.items())
    refused = {code: n for code, n in tally.answers.items() if code != "200"}
    say(f"events: {tally.events} ({kinds}), {_copies(copies)} each")
    say(f"sent: {tally.sent} (resent: {tally.resent})")
    say(f"200: {tally.answers['200']}")
    say(f"refused: {_counts(refused) or 'none'}")
    errors = f" ({_counts(tally.no_answer)})" if tally.no_answer else ""
    say(f"no answer: {sum(tally.no_answer.values())}{errors}")
    if tally.unsent:
        say(f"not sent: {_copies(tally.unsent)} (the {deadline:g} s deadline came first)")
    say(f"never acknowledged: {len(tally.unacknowledged())}")


def _copies(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{key} × {n}" for key, n in sorted(counter.items()))


def say(line: str) -> None:
    """One line of output, at once: a refusal shows while the run goes on."""
    print(line, flush=True)


def target(given: str | None) -> str:
    """The --url, else SMSC_SIMULATE_URL, else the URL of `serve` with its SMSC_HOST and SMSC_PORT."""
    if given is not None or os.environ.get("SMSC_SIMULATE_URL"):
        return arguments.from_env(given, "SMSC_SIMULATE_URL", "", handler_url)
    port = arguments.from_env(None, "SMSC_PORT", "8080", arguments.port)
    host = arguments.from_env(None, "SMSC_HOST", "127.0.0.1", str)
    # `serve` may listen on every address; the simulator then talks to this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (read, not bound)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/smsc"
