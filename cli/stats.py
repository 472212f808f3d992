"""`smsc-ingest stats [--json]`: the first numbers a person asks for, on one screen."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from cli import arguments
from cli.render import printable
from smsc.settings import Settings

if TYPE_CHECKING:
    from workers.state import State

# Column of the values in the text form.
_LABEL = 24
WINDOWS = ("5m", "1h", "24h")


def register(commands: argparse._SubParsersAction[arguments.Parser]) -> None:
    """Add the `stats` subcommand."""
    parser = commands.add_parser(
        "stats",
        help="queue, workers, dead letters, events stored and lag, read once from Redis and PostgreSQL",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object (stable keys) instead of text")
    parser.add_argument(
        "--account",
        type=arguments.account,
        help="dead letters, events, lag and messages of this account only (`default`: POST /smsc); "
        "the queue and workers are shared by all",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Print the state; exit code 1 if Redis or PostgreSQL could not be read (what could be is printed)."""
    from workers.state import STATS, StateReader

    reader = StateReader(settings, STATS)
    try:
        state = reader.read(activity=True, account=args.account)
    finally:
        reader.close()
    if args.json:
        print(json.dumps(as_json(state, settings.queue, args.account), ensure_ascii=False))
    else:
        print("\n".join(as_text(state, settings.queue, args.account)))
    return 0 if state.redis is not None and state.postgres is not None else 1


def as_json(state: State, queue: str, account: str | None = None) -> dict[str, Any]:
    """Every key always present; a value its server could not give is null. `account`: the one
    account PostgreSQL's figures are of, null for all."""
    redis, postgres = state.redis, state.postgres
    activity = postgres.activity if postgres is not None else None
    return {
        "account": account,
        "redis": {
            "up": redis is not None,
            "error": state.redis_error,
            "aof_enabled": redis and redis.aof_enabled,
            "aof_last_write_ok": redis and redis.aof_last_write_ok,
            "evicted_keys": redis and redis.evicted_keys,
        },
        "postgres": {"up": postgres is not None, "error": state.postgres_error},
        "queue": {
            "name": queue,
            "jobs": redis and redis.queued,
            "oldest_job_age_seconds": redis and round(redis.oldest_job_age, 3),
        },
        "workers_alive": redis and redis.workers_alive,
        "registries": {
            "started": redis and redis.started,
            "scheduled": redis and redis.scheduled,
            "failed": redis and redis.failed,
        },
        "dead_letters": {
            "waiting": postgres and sum(postgres.dead_letters.values()),
            "by_error_class": postgres and postgres.dead_letters,
            "commonest_reasons": activity
            and [{"error_class": c, "reason": r, "count": n} for c, r, n in activity.common_reasons],
        },
        "events_stored": activity
        and {kind: dict(zip(WINDOWS, counts, strict=True)) for kind, counts in activity.stored.items()},
        "lag_seconds": {
            "events": activity and activity.lag_events,
            "p50": activity and activity.lag_p50,
            "p99": activity and activity.lag_p99,
        },
        "messages_24h": {
            "delivered": activity and activity.delivered,
            "failed": activity and activity.failed,
        },
    }


def as_text(state: State, queue: str, account: str | None = None) -> list[str]:
    """Aligned lines, a label and its values; what could not be read says why. With `account`,
    the figures from PostgreSQL are of that account alone, and a last line says so."""
    lines: list[str] = []

    def line(label: str, value: str) -> None:
        lines.append(f"{label:<{_LABEL}}{value}".rstrip())

    redis, postgres = state.redis, state.postgres
    if redis is None:
        line("Redis", f"DOWN: {printable(state.redis_error or '')}")
    else:
        aof = "AOF on" if redis.aof_enabled else "AOF OFF"
        write = "last write ok" if redis.aof_last_write_ok else "last write FAILED"
        line("Redis", f"up ({aof}, {write}, {redis.evicted_keys} keys evicted)")
    if postgres is None:
        line("PostgreSQL", f"DOWN: {printable(state.postgres_error or '')}")
    else:
        line("PostgreSQL", "up")
    lines.append("")
    unknown = "unknown (Redis down)"
    if redis is None:
        line("Queue", f"{printable(queue)}: {unknown}")
        line("Workers alive", unknown)
        line("RQ registries", unknown)
    else:
        oldest = f", oldest {_seconds(redis.oldest_job_age)}" if redis.queued else ""
        line("Queue", f"{printable(queue)}: {redis.queued} jobs{oldest}")
        line("Workers alive", str(redis.workers_alive))
        line(
            "RQ registries",
            f"started {redis.started}, scheduled {redis.scheduled} (retries), "
            f"failed {redis.failed} (retries exhausted)",
        )
    activity = postgres.activity if postgres is not None else None
    if postgres is None or activity is None:
        unknown = "unknown (PostgreSQL down)"
        for label in ("Dead letters waiting", "Events stored", "Lag, last 5 min", "Messages, last 24 h"):
            line(label, unknown)
        return lines
    classes = sorted(((n, c) for c, n in postgres.dead_letters.items() if n), key=lambda nc: (-nc[0], nc[1]))
    by_class = ", ".join(f"{printable(c)} {n}" for n, c in classes)
    line(
        "Dead letters waiting",
        f"{sum(postgres.dead_letters.values())}" + (f" ({by_class})" if by_class else ""),
    )
    for i, (error_class, reason, count) in enumerate(activity.common_reasons):
        line(
            "  commonest reasons" if i == 0 else "",
            f"{count:>6}  {printable(error_class)}: {printable(reason)}",
        )
    line("Events stored", "".join(f"{w:>9}" for w in ("5 min", "1 h", "24 h")))
    for kind, counts in activity.stored.items():
        line(f"  {kind}", "".join(f"{n:>9}" for n in counts))
    if activity.lag_p50 is None or activity.lag_p99 is None:
        line("Lag, last 5 min", "no events")
    else:
        p50, p99 = _seconds(activity.lag_p50), _seconds(activity.lag_p99)
        line("Lag, last 5 min", f"p50 {p50}, p99 {p99} ({activity.lag_events} events)")
    line("Messages, last 24 h", f"delivered {activity.delivered}, failed {activity.failed}")
    if account is not None:
        line("Account", f"{account} (dead letters, events, lag, messages; the queue is every account's)")
    return lines


def _seconds(value: float) -> str:
    """A duration a person reads at a glance: milliseconds, seconds, or minutes and hours."""
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    if abs(value) < 120:
        return f"{value:.1f} s"
    if abs(value) < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"
