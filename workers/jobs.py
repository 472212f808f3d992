"""The RQ job: raw requests in, rows and dead letters out. Protocol and SQL live elsewhere."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from rq import get_current_job
from rq.exceptions import DeserializationError
from rq.job import Job

from smsc.accounts import Account, Accounts, load, reload
from smsc.exceptions import BadRequest, PermanentError
from smsc.protocol import RawRequest, decode
from smsc.protocol.decode import peek
from smsc.protocol.fields import event_ids
from smsc.protocol.normalize import normalize
from smsc.settings import Settings
from workers import metrics
from workers.store import Outcome, Pending, Store

log = structlog.get_logger("smsc.worker")

# Old dead letters are purged, and the coming months' partitions made, by the workers themselves at
# their first job and then at most this often per process.
PURGE_EVERY_SECONDS = 3600.0


@dataclass
class WorkerContext:
    """What a job needs from its process: settings, accounts and the kept database connection."""

    settings: Settings
    store: Store
    accounts: Accounts
    next_purge: float = field(default=0.0)
    # Jobs dequeued with a job, by its id: their requests are stored in its transaction.
    along: dict[str, list[Job]] = field(default_factory=dict)
    # Outcomes of requests already stored with an earlier job's, and when they were committed, by the
    # id of the job holding them.
    stored_ahead: dict[str, tuple[list[Outcome], float]] = field(default_factory=dict)


_context: WorkerContext | None = None


def install(context: WorkerContext | None) -> None:
    """Give jobs of this process their context (the `worker` command does this at start)."""
    global _context
    _context = context


def _current() -> WorkerContext:
    # A plain `rq worker` started without our command still works: build from the environment.
    if _context is None:
        settings = Settings.from_env()
        install(WorkerContext(settings=settings, store=Store(settings.database_url), accounts=load(settings)))
    assert _context is not None
    return _context


def process(requests: list[dict[str, Any]]) -> None:
    """Store the events of one job's raw requests; dead-letter each one that cannot be stored.

    A bad request never holds back its neighbours. A transient failure (database down) raises,
    and RQ retries the whole job later: writing it again is harmless.
    """
    started = time.perf_counter()
    try:
        _process(requests)
    finally:
        metrics.JOB_DURATION.observe(time.perf_counter() - started)


def take_along(job_id: str, others: list[Job]) -> None:
    """Have the job `job_id` store, in its own transaction, the requests of the jobs `others`
    dequeued with it: one commit for several jobs. Each of them still runs, and finishes or fails
    on its own: it reports the outcomes stored for it, or, where they were not (the first job
    failed, or its arguments are not raw requests), does its own work."""
    if others:
        _current().along[job_id] = others


def forget(job_ids: list[str]) -> None:
    """Drop what `take_along` left for these jobs: they have run, or will not in this process."""
    ctx = _current()
    for job_id in job_ids:
        ctx.along.pop(job_id, None)
        ctx.stored_ahead.pop(job_id, None)


def _process(requests: list[dict[str, Any]]) -> None:
    ctx = _current()
    job = get_current_job()
    job_id = job.id if job is not None else "-"
    along = ctx.along.pop(job_id, [])
    ahead = ctx.stored_ahead.pop(job_id, None)
    if ahead is not None:
        _report(*ahead, ctx, job_id)
        return
    raws = [_raw(item) for item in requests]
    others = [(other.id, own) for other in along if (own := _raws_of(other)) is not None]
    if any(ctx.accounts.get(raw.account) is None for raw in raws + [r for _, own in others for r in own]):
        # An account added to the file since this worker read it (the ingress knew it already).
        ctx.accounts = reload(ctx.settings, ctx.accounts)
    items = [_pending(raw, ctx) for raw in raws]
    job_ids = [job_id] * len(items)
    for other, own in others:
        items += [_pending(raw, ctx) for raw in own]
        job_ids += [other] * len(own)
    outcomes = ctx.store.save(items, job_ids)
    committed_at = time.time()
    mine, start = outcomes[: len(raws)], len(raws)
    for other, own in others:
        ctx.stored_ahead[other] = (outcomes[start : start + len(own)], committed_at)
        start += len(own)
    _report(mine, committed_at, ctx, job_id)
    if time.monotonic() >= ctx.next_purge:
        ctx.next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        made = ctx.store.make_partitions()
        if made:
            log.info("partitions_made", partitions=made)
        purged = ctx.store.purge(ctx.settings.dead_letter_days)
        if purged.dead_letters or purged.duplicates:
            log.info(
                "dead_letters_purged",
                count=purged.dead_letters,
                duplicates=purged.duplicates,
                older_than_days=ctx.settings.dead_letter_days,
            )


def _report(outcomes: list[Outcome], committed_at: float, ctx: WorkerContext, job_id: str) -> None:
    """The metrics and the log line of each request of a job."""
    metrics.JOB_REQUESTS.observe(len(outcomes))
    _count(outcomes, ctx.accounts, committed_at)
    for outcome in outcomes:
        ids = outcome.pending.ids or {}
        raw = outcome.pending.raw
        if outcome.result == "dead_letter":
            log.error(
                "event_dead_lettered",
                rid=raw.rid,
                account=raw.account,
                job=job_id,
                reason=outcome.reason,
                **ids,
            )
        elif outcome.result == "conflict":
            log.warning(
                "event_conflict", rid=raw.rid, account=raw.account, job=job_id, reason=outcome.reason, **ids
            )
        else:
            log.info(f"event_{outcome.result}", rid=raw.rid, account=raw.account, **ids)


def _count(outcomes: list[Outcome], accounts: Accounts, committed_at: float) -> None:
    # Counted by label set first: a child's look-up (labels()) costs more than the rest of a count.
    counts: Counter[tuple[str, str, str]] = Counter()
    for outcome in outcomes:
        kind = (outcome.pending.ids or {}).get("kind", metrics.UNKNOWN_KIND)
        counts[kind, outcome.result, outcome.pending.raw.account] += 1
        if outcome.result == "stored":
            metrics.LAG.observe(committed_at - outcome.pending.raw.received_at)
    for (kind, result, account), n in counts.items():
        metrics.EVENTS.labels(kind, result, accounts.label(account)).inc(n)


def _raws_of(job: Job) -> list[RawRequest] | None:
    """The raw requests another job holds; None where they are not ours (that job then runs, and
    fails, on its own)."""
    try:
        (requests,) = job.args
        return [RawRequest.from_json(item) for item in requests]
    except (PermanentError, DeserializationError, TypeError, ValueError):
        return None


def _raw(item: Any) -> RawRequest:
    try:
        return RawRequest.from_json(item)
    except PermanentError as e:
        # Not one of ours at all: nothing to keep but the reason, so the job fails loudly instead.
        raise PermanentError(f"job argument is not a raw request: {e.reason}") from e


def _pending(raw: RawRequest, ctx: WorkerContext) -> Pending:
    account = ctx.accounts.get(raw.account)
    if account is None:
        # Kept for replay once the file names the account (see README, "Accounts").
        ids = peek(raw.body, raw.query, raw.content_type, ctx.settings.default_charset)
        return Pending(raw, None, PermanentError(f"unknown account {raw.account!r}"), ids=ids)
    try:
        return _read(raw, account)
    except Exception as e:  # a bug of ours must cost this request alone, kept for replay
        # Not even peek(): it would meet the same bug.
        log.exception("event_unreadable", rid=raw.rid, account=raw.account)
        return Pending(raw, None, PermanentError(f"internal error: {type(e).__name__}: {e}"))


def _read(raw: RawRequest, account: Account) -> Pending:
    charset = account.charset
    try:
        decoded = decode(raw.body, raw.query, raw.content_type, charset)
    except BadRequest as e:
        ids = peek(raw.body, raw.query, raw.content_type, charset)
        return Pending(raw, None, PermanentError(f"cannot decode: {e.reason}"), ids=ids)
    ids = event_ids(decoded.params)
    try:
        return Pending(
            raw, normalize(decoded, account.tz, datetime.fromtimestamp(raw.received_at, UTC)), ids=ids
        )
    except PermanentError as e:
        return Pending(raw, None, PermanentError(f"{decoded.kind}: {e.reason}"), ids=ids)
