"""The RQ job: raw requests in, rows out. Thin on purpose: protocol and SQL live elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from smsc.exceptions import BadRequest, PermanentError
from smsc.protocol import RawRequest, decode
from smsc.protocol.normalize import Event, IncomingMessage, StatusEvent, normalize
from smsc.settings import Settings
from workers.store import Store

log = structlog.get_logger("smsc.worker")


@dataclass
class WorkerContext:
    """What a job needs from its process: settings and the kept database connection."""

    settings: Settings
    store: Store


_context: WorkerContext | None = None


def install(context: WorkerContext | None) -> None:
    """Give jobs of this process their context (the `worker` command does this at start)."""
    global _context
    _context = context


def _current() -> WorkerContext:
    # A plain `rq worker` started without our command still works: build from the environment.
    if _context is None:
        settings = Settings.from_env()
        install(WorkerContext(settings=settings, store=Store(settings.database_url)))
    assert _context is not None
    return _context


def process(requests: list[dict[str, Any]]) -> None:
    """Decode, normalize and store the raw requests of one job, in one transaction."""
    ctx = _current()
    batch = [(raw, _event(raw, ctx.settings)) for raw in map(RawRequest.from_json, requests)]
    for (raw, _), stored in zip(batch, ctx.store.save(batch), strict=True):
        log.info("event_stored" if stored.new else "event_duplicate", rid=raw.rid, **_ids(stored.event))


def _event(raw: RawRequest, settings: Settings) -> Event:
    try:
        decoded = decode(raw.body, raw.query, raw.content_type, settings.default_charset)
    except BadRequest as e:
        raise PermanentError(f"request {raw.rid}: {e.reason}") from e
    try:
        return normalize(decoded, settings.tz)
    except PermanentError as e:
        raise PermanentError(f"request {raw.rid}: {decoded.kind} {e.reason}") from e


def _ids(event: Event) -> dict[str, object]:
    if isinstance(event, StatusEvent):
        return {
            "kind": "status",
            "id": event.message_id,
            "phone": event.phone,
            "status": event.status,
        }
    if isinstance(event, IncomingMessage):
        return {"kind": "incoming", "id": event.id, "phone": event.phone}
    return {
        "kind": "call",
        "phone": event.phone,
        "called_at": event.called_at.isoformat(),
    }
