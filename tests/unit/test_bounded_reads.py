"""A server's read that never answers fails at its deadline, and never piles up threads."""

from __future__ import annotations

import threading
import time

import pytest

from workers.state import BoundedReads


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def test_a_read_answers_its_result_or_its_error() -> None:
    """What the read returns is the result; what it raises reaches the one waiting for it."""
    reads: BoundedReads[str] = BoundedReads("Redis")
    assert reads.start(lambda: "answer")(soon()) == "answer"

    def refused() -> str:
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(ConnectionRefusedError, match="nobody listens"):
        reads.start(refused)(soon())


def test_a_hung_read_fails_at_its_deadline_and_the_next_fails_without_starting() -> None:
    """Past the deadline the waiter gets TimeoutError; while the read still hangs, another read of the
    same server fails at once and is never started; once it ends, reads start again."""
    reads: BoundedReads[str] = BoundedReads("PostgreSQL")
    release = threading.Event()

    def hung() -> str:
        release.wait(60)
        return "late"

    with pytest.raises(TimeoutError, match="PostgreSQL did not answer in time"):
        reads.start(hung)(soon(0.2))
    started: list[str] = []

    def another() -> str:
        started.append("another")
        return "another"

    with pytest.raises(TimeoutError, match="PostgreSQL has not answered a previous read yet"):
        reads.start(another)(soon())
    assert started == []

    release.set()
    deadline = soon(30)
    while any(t.name == "state-PostgreSQL" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reads.start(another)(soon()) == "another"
    assert started == ["another"]
