"""Running the ingress: one process, or N pre-forked processes sharing the port (SO_REUSEPORT).

SIGHUP reloads the accounts file in every process: the supervising one passes it on to each.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from types import FrameType

import structlog
import uvloop
from aiohttp import web

from ingress.app import ACCOUNTS, create_app
from ingress.metrics import use_multiprocess
from smsc.accounts import Accounts
from smsc.settings import Settings

log = structlog.get_logger("smsc.ingress")

# The collector's young generation, in objects (Python's default is 700): a few per request in
# flight are in it at any time, and each collection walks them.
GC_YOUNG_OBJECTS = 20_000


def serve(settings: Settings, accounts: Accounts, host: str, port: int, processes: int) -> int:
    """Serve until SIGTERM/SIGINT; with `processes` > 1 the kernel spreads connections over them."""
    settings.require_secret()  # refuse to start before forking anything
    # Until a process has its own handler, a SIGHUP (a reload right after a start) must not end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log.info(
        "ingress_starting",
        host=host,
        port=port,
        processes=processes,
        hash=settings.hash_algorithm.value,
        signed=bool(settings.secret),
        queue=settings.queue,
        accounts=sorted(accounts.by_name),
    )
    if processes == 1:
        _run(settings, accounts, host, port, reuse_port=False)
        return 0
    # The processes' metrics meet in files of a directory made fresh for this start (a previous
    # run's files must never add to the counts) and removed when the last process has stopped.
    metrics_dir = tempfile.mkdtemp(prefix="smsc-ingress-metrics-") if settings.metrics else None
    try:
        children = []
        for _ in range(processes):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    _run(settings, accounts, host, port, reuse_port=True, metrics_dir=metrics_dir)
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
        return _supervise(children)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(
    settings: Settings,
    accounts: Accounts,
    host: str,
    port: int,
    *,
    reuse_port: bool,
    metrics_dir: str | None = None,
) -> None:
    if metrics_dir is not None:
        use_multiprocess(metrics_dir)
    app = create_app(settings, metrics_dir, accounts)
    app.cleanup_ctx.append(_reload_on_hangup)
    # What is made by now (modules, the app) lives as long as the process: frozen, the collector
    # no longer walks it. And a young generation larger than the objects of the requests in
    # flight makes its collections rarer: each one walks those objects, whatever its size.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
    # aiohttp's access log prints the query string, which holds the secret: our own line replaces it.
    # uvloop: the same asyncio, with a faster event loop and sockets.
    web.run_app(
        app,
        host=host,
        port=port,
        reuse_port=reuse_port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


async def _reload_on_hangup(app: web.Application) -> AsyncIterator[None]:
    # A handler of the event loop: the reload runs between requests' steps, never inside one.
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, app[ACCOUNTS].reload)
    yield
    loop.remove_signal_handler(signal.SIGHUP)
    # Not back to the default, which would end the process mid-shutdown.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _supervise(children: list[int]) -> int:
    """Pass SIGTERM/SIGINT/SIGHUP on to the children and wait for them; if one dies on its own, stop
    all, so that the service manager restarts a whole, healthy ingress."""
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _kill(pid, signum)

    def reload(signum: int, _frame: FrameType | None) -> None:
        for pid in children:
            _kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload)
    exit_code = 0
    running = set(children)
    while running:
        pid, status = os.wait()
        running.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if not stopping:
            log.error("ingress_process_died", pid=pid, code=code)
            forward(signal.SIGTERM, None)
            exit_code = 1
        elif code != 0:
            exit_code = code if code > 0 else 1
    return exit_code


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return
