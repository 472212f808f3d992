"""The scale-out test's gateway: run on the load balancer's host, it sends signed callbacks of the three
kinds through the load balancer as `smsc-ingest simulate` does (cli/gateway.py, cli/delivery.py), a
third of the events once, a third twice and a third three times, resends every copy not answered 200
after a short pause, stops sending at its deadline, then checks in PostgreSQL (cli/verify.py) that
each acknowledged event is stored exactly once and not dead-lettered. It writes what happened as JSON.

    python -m tests.scale.sender send URL OUT --events N --deadline S [--rate R] ...
    python -m tests.scale.sender probe URL   (one new event, once: prints the answer's code)

SMSC_SECRET and DATABASE_URL come from the environment; SSL_CERT_FILE names the test's certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from cli.delivery import Schedule, Tally, deliver
from cli.gateway import TRANSPORTS, Callback, Event, Run, callback, event
from cli.verify import verify
from smsc.settings import Settings

COPIES = (1, 2, 3)  # each third of the events is sent this many times
TRIES = 50  # the gateway's own number of tries of a copy
REQUEST_SECONDS = 15.0


def new_run(settings: Settings) -> Run:
    return Run(
        datetime.now(UTC),
        settings.hash_algorithm,
        settings.secret,
        settings.default_charset,
        settings.tz,
        TRANSPORTS,
    )


def share(events: int, part: int) -> range:
    """Event numbers of the part that is sent COPIES[part] times: all three kinds in each."""
    size = -(-events // len(COPIES))
    return range(part * size, min(events, (part + 1) * size))


async def send(
    url: str, run: Run, args: argparse.Namespace
) -> tuple[list[Tally], list[tuple[float, str, float]]]:
    """Every part at once; the timeline holds (wall clock at the end, code, seconds) of each request."""
    timeline: list[tuple[float, str, float]] = []

    def observe(code: str, seconds: float) -> None:
        timeline.append((time.time(), code, seconds))

    def part(k: int) -> asyncio.Future[Tally]:
        numbers = share(args.events, k)

        def build(i: int) -> tuple[str, Callback]:
            ev = event(run, numbers[i])
            return ev.describe(run), callback(run, ev)

        rate = args.rate / len(COPIES) if args.rate else None
        schedule = Schedule(
            COPIES[k], max(1, args.concurrency // len(COPIES)), rate, args.retry_after, TRIES, args.deadline
        )
        return asyncio.ensure_future(deliver(url, len(numbers), build, schedule, quiet, observe))

    tallies = await asyncio.gather(*(part(k) for k in range(len(COPIES))))
    return list(tallies), timeline


def quiet(line: str) -> None:
    print(f"sender: {line}", file=sys.stderr, flush=True)


def run_send(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    run = new_run(settings)
    started = time.time()
    tallies, timeline = asyncio.run(send(args.url, run, args))
    sent_until = time.time()
    acked: list[Event] = []
    answers: Counter[str] = Counter()
    for k, tally in enumerate(tallies):
        numbers = share(args.events, k)
        acked += [event(run, numbers[i]) for i in range(tally.events) if tally.acknowledged[i]]
        answers.update(tally.answers)
        answers.update({"no answer": sum(tally.no_answer.values())} if tally.no_answer else {})
    verdict = verify(settings.database_url, run, acked, args.verify_timeout, quiet)
    result = {
        "tag": run.tag,
        "events": args.events,
        "acknowledged": len(acked),
        "sent": sum(t.sent for t in tallies),
        "unsent": sum(t.unsent for t in tallies),
        "answers": dict(answers),
        "started": started,
        "sent_until": sent_until,
        "timeline": timeline,
        "stored_once": verdict.stored_once,
        "missing": len(verdict.missing),
        "duplicated": len(verdict.duplicated),
        "dead_lettered": len(verdict.dead_lettered) + verdict.unidentified,
    }
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


async def probe(url: str, run: Run) -> str:
    cb = callback(run, event(run, 0))
    timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{url}?{cb.query}", data=cb.body, headers={"Content-Type": cb.content_type}) as resp,
    ):
        return str(resp.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.scale.sender")
    commands = parser.add_subparsers(dest="command", required=True)
    sending = commands.add_parser("send")
    sending.add_argument("url")
    sending.add_argument("out")
    sending.add_argument("--events", type=int, required=True)
    sending.add_argument("--deadline", type=float, required=True)
    sending.add_argument("--rate", type=float)
    sending.add_argument("--concurrency", type=int, default=48)
    sending.add_argument("--retry-after", type=float, default=0.5)
    sending.add_argument("--verify-timeout", type=float, default=120.0)
    probing = commands.add_parser("probe")
    probing.add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "probe":
        try:
            print(asyncio.run(probe(args.url, new_run(Settings.from_env()))))
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            print(f"no answer ({type(e).__name__})")
        return 0
    return run_send(args)


if __name__ == "__main__":
    sys.exit(main())
