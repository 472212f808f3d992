"""Sending callbacks as the gateway does: each copy resent after any answer but 200 or 404 (or none),
on a compressed schedule; copies of one event interleaved; requests in flight and per second capped."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from cli.gateway import Callback
from cli.render import printable

if TYPE_CHECKING:
    import aiohttp

MAX_COPIES: Final = 50  # the gateway's own number of tries
REQUEST_TIMEOUT_SECONDS: Final = 15.0
CONNECT_TIMEOUT_SECONDS: Final = 5.0
ANSWER_CHARS: Final = 200  # of the ingress's answer, shown next to a refusal
SHOWN_ANSWERS: Final = 20  # distinct refusals shown as they come; the tally counts them all
# Events whose copies are shuffled together: copies interleave with other events' and some are in
# flight at once, as when the gateway resends while an earlier copy is still being answered.
CHUNK_EVENTS: Final = 64
# Copies being sent or waiting to be resent: memory stays bounded however many events a run has.
LIVE_COPIES: Final = 4096
FINAL: Final = frozenset({"200", "404"})  # the gateway stops on these and resends on anything else


@dataclass(frozen=True)
class Schedule:
    """How the run sends: the compressed form of the gateway's "every 4 minutes, 50 times"."""

    copies: int
    concurrency: int
    rate: float | None  # requests per second, resends included; None: no cap
    retry_after: float
    tries: int
    deadline: float  # seconds from the start after which nothing more is sent


@dataclass
class Tally:
    """What happened to a run's requests."""

    events: int
    acknowledged: bytearray  # 1 for each event with a copy answered 200
    sent: int = 0
    resent: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # HTTP code -> requests
    no_answer: Counter[str] = field(default_factory=Counter)  # error class -> requests
    unsent: int = 0  # copies never sent: the deadline came first

    def unacknowledged(self) -> list[int]:
        """The events no copy of which was answered 200."""
        return [i for i, done in enumerate(self.acknowledged) if not done]


# (description for a person, the request) of event i
Build = Callable[[int], tuple[str, Callback]]
# Told of every request as it ends: its code (or `no answer`) and its seconds
Observe = Callable[[str, float], None]


async def deliver(
    url: str,
    events: int,
    build: Build,
    schedule: Schedule,
    say: Callable[[str], None],
    observe: Observe | None = None,
) -> Tally:
    """Send `schedule.copies` copies of each of `events` events; `say` gets a line per new kind of
    refusal, `observe` (the scale-out test's timeline) each request's code and duration."""
    import aiohttp

    tally = Tally(events, bytearray(events))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=schedule.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sender = _Sender(session, url, schedule, tally, say, observe)
        tasks: set[asyncio.Task[None]] = set()
        # Not for security: the order copies go out in, the same for every run of this size.
        shuffle = random.Random(events).shuffle  # noqa: S311
        created = 0
        for start in range(0, events, CHUNK_EVENTS):
            if sender.late():
                break
            built = {i: build(i) for i in range(start, min(events, start + CHUNK_EVENTS))}
            order = [(i, copy) for i in built for copy in range(1, schedule.copies + 1)]
            shuffle(order)
            for i, copy in order:
                await sender.live.acquire()
                if sender.late():
                    sender.live.release()
                    break
                task = asyncio.create_task(sender.copy(i, *built[i], copy))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                created += 1
        tally.unsent += events * schedule.copies - created
        await asyncio.gather(*tasks)
    return tally


class _Sender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        schedule: Schedule,
        tally: Tally,
        say: Callable[[str], None],
        observe: Observe | None,
    ) -> None:
        self.session = session
        self.url = url
        self.schedule = schedule
        self.tally = tally
        self.say = say
        self.observe = observe
        self.live = asyncio.Semaphore(LIVE_COPIES)
        self.in_flight = asyncio.Semaphore(schedule.concurrency)
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.end = loop.time() + schedule.deadline
        self.interval = 1 / schedule.rate if schedule.rate else 0.0
        self.next_slot = 0.0
        self.shown: set[tuple[str, str]] = set()

    def late(self) -> bool:
        return self.clock() >= self.end

    async def copy(self, i: int, what: str, cb: Callback, copy: int) -> None:
        """One copy of event `i`, resent until 200 or 404, its tries are spent or the deadline comes."""
        try:
            for attempt in range(1, self.schedule.tries + 1):
                if attempt > 1:
                    if self.clock() + self.schedule.retry_after >= self.end:
                        return
                    await asyncio.sleep(self.schedule.retry_after)
                async with self.in_flight:
                    if not await self._slot():
                        if attempt == 1:
                            self.tally.unsent += 1
                        return
                    began = self.clock()
                    code, said = await self._post(cb)
                    if self.observe is not None:
                        self.observe(code, self.clock() - began)
                self.tally.sent += 1
                if attempt > 1:
                    self.tally.resent += 1
                if code == "200":
                    self.tally.acknowledged[i] = 1
                elif (code, said) not in self.shown and len(self.shown) < SHOWN_ANSWERS:
                    self.shown.add((code, said))
                    self.say(f"{code} {said} (first such answer: {what}, copy {copy}, try {attempt})")
                if code in FINAL:
                    return
        finally:
            self.live.release()

    async def _slot(self) -> bool:
        """Wait for this request's turn under --rate; False if it would come after the deadline."""
        now = self.clock()
        at = max(now, self.next_slot)
        if at >= self.end:
            return False
        self.next_slot = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)
        return True

    async def _post(self, cb: Callback) -> tuple[str, str]:
        """The answer's code and what the ingress said, or `no answer` and the error's class."""
        import aiohttp

        try:
            async with self.session.post(
                f"{self.url}?{cb.query}", data=cb.body, headers={"Content-Type": cb.content_type}
            ) as resp:
                code = str(resp.status)
                said = (
                    ""
                    if code == "200"
                    else (await resp.content.read(ANSWER_CHARS)).decode("utf-8", "replace")
                )
            self.tally.answers[code] += 1
            return code, printable(said.strip())
        except (aiohttp.ClientError, TimeoutError) as e:
            self.tally.no_answer[type(e).__name__] += 1
            return "no answer", f"({type(e).__name__}) from {self.url}: is the ingress running?"
