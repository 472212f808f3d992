"""The scale-out test's hosts: one network namespace each, wired to a bridge that lives in a namespace
of its own, so the machine's own namespace gets no address, route or interface. Names carry the run's
process id; a crashed run's namespaces, processes and files are removed by the next run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

PREFIX: Final = "smsc-scale-"
SUBNET: Final = "10.77.0"
# host -> last byte of its address
HOSTS: Final = {
    "lb": 1,
    "ingress1": 11,
    "ingress2": 12,
    "redis1": 21,
    "redis2": 22,
    "redis3": 23,
    "worker1": 31,
    "worker2": 32,
    "pg": 41,
}
BRIDGE_HOST: Final = "br"
COMMAND_SECONDS: Final = 30.0
STOP_SECONDS: Final = 10.0


class Failure(Exception):
    """A step that did not do what it must: the run fails with this message."""


def address(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def sh(argv: Sequence[str], *, timeout: float = COMMAND_SECONDS, check: bool = True) -> str:
    """Run a command to its end (bounded); its output, or Failure naming it."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(argv)}: still running after {timeout:g} s") from None
    if check and done.returncode != 0:
        raise Failure(
            f"{' '.join(argv)}: exit code {done.returncode}: {(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def wait_until(what: str, ready: Callable[[], bool], timeout: float, pause: float = 0.25) -> float:
    """Poll `ready` until true (the seconds it took), or Failure after `timeout` seconds."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            raise Failure(f"{what}: not within {timeout:g} s")
        time.sleep(pause)
    return time.monotonic() - start


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_in(ns: str) -> list[int]:
    out = sh(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split()]


def _empty(*namespaces: str) -> list[str]:
    """TERM, then KILL, whatever runs in the namespaces (only what a run of this test started is
    there), all at once: the wait is bounded once, not per namespace. What needed KILL, named."""
    killed: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [pid for ns in namespaces for pid in _pids_in(ns)]
        if not pids:
            break
        for pid in pids:
            if sig == signal.SIGKILL:
                killed.append(_command(pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + STOP_SECONDS
        while any(_pids_in(ns) for ns in namespaces) and time.monotonic() < deadline:
            time.sleep(0.2)
    return killed


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return str(pid)


def remove_leftovers(own: int) -> list[str]:
    """Namespaces and folders of earlier runs whose process is gone: emptied and removed."""
    removed = []
    for line in sh(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.split() else ""
        run = name.removeprefix(PREFIX).split("-", 1)[0]
        if not name.startswith(PREFIX) or not run.isdigit():
            continue
        if int(run) == own or _alive(int(run)):
            continue
        _empty(name)
        sh(["ip", "netns", "delete", name], check=False)
        removed.append(name)
    for folder in Path("/tmp").glob(f"{PREFIX}*"):
        run = folder.name.removeprefix(PREFIX)
        if run.isdigit() and int(run) != own and not _alive(int(run)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


@dataclass
class Process:
    """A long-running program on one host, its output in a log file."""

    name: str
    host: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: signal.Signals = signal.SIGKILL, *, wait: bool = True) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
        if self.popen is not None and wait:
            try:
                self.popen.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_SECONDS)
        if self._out is not None:
            self._out.close()
            self._out = None


@dataclass
class Lab:
    """The run's hosts, folder and processes."""

    run: int
    root: Path  # the checkout
    work: Path
    made: list[str] = field(default_factory=list)  # namespaces made, to delete
    processes: list[Process] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path) -> Lab:
        run = os.getpid()
        work = Path(f"/tmp/{PREFIX}{run}")
        work.mkdir(mode=0o755)
        work.chmod(0o755)  # PostgreSQL runs as its own account and must reach its folder here
        return cls(run, root, work)

    def ns(self, host: str) -> str:
        return f"{PREFIX}{self.run}-{host}"

    def inside(self, host: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def build(self) -> None:
        """The bridge's namespace, then each host's: veth from the bridge to its eth0, its address."""
        bridge = self.ns(BRIDGE_HOST)
        sh(["ip", "netns", "add", bridge])
        self.made.append(bridge)
        sh(self.inside(BRIDGE_HOST, "ip", "link", "add", "br0", "type", "bridge"))
        sh(self.inside(BRIDGE_HOST, "ip", "link", "set", "br0", "up"))
        sh(self.inside(BRIDGE_HOST, "ip", "link", "set", "lo", "up"))
        for host in HOSTS:
            ns = self.ns(host)
            sh(["ip", "netns", "add", ns])
            self.made.append(ns)
            port = f"v-{host}"
            sh(
                self.inside(
                    BRIDGE_HOST,
                    "ip",
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                )
            )
            sh(self.inside(BRIDGE_HOST, "ip", "link", "set", port, "master", "br0", "up"))
            sh(self.inside(host, "ip", "link", "set", "lo", "up"))
            sh(self.inside(host, "ip", "addr", "add", f"{address(host)}/24", "dev", "eth0"))
            sh(self.inside(host, "ip", "link", "set", "eth0", "up"))

    def start(self, name: str, host: str, argv: list[str], env: dict[str, str]) -> Process:
        proc = Process(name, host, argv, env, self.work / f"{name}.log")
        self.restart(proc)
        self.processes.append(proc)
        return proc

    def restart(self, proc: Process) -> None:
        proc._out = proc.log.open("ab")
        proc.popen = subprocess.Popen(
            self.inside(proc.host, *proc.argv),
            stdin=subprocess.DEVNULL,
            stdout=proc._out,
            stderr=subprocess.STDOUT,
            env=proc.env,
            cwd=self.root,
            start_new_session=True,  # Ctrl-C in the terminal reaches the test only, which stops them
        )

    def destroy(self) -> None:
        """Stop every process, remove the namespaces and the folder; each step bounded, none skipped."""
        for proc in self.processes:
            if proc.running():
                with contextlib.suppress(OSError):
                    proc.kill(signal.SIGTERM, wait=False)
        killed = _empty(*self.made)
        for ns in reversed(self.made):
            sh(["ip", "netns", "delete", ns], check=False)
        self.made.clear()
        shutil.rmtree(self.work, ignore_errors=True)
        if killed:
            # Last, and never failing: a reader gone (`| head`) must not stop the cleanup above.
            with contextlib.suppress(OSError):
                print(
                    f"cleanup: still running {STOP_SECONDS:g} s after SIGTERM, killed: {killed}", flush=True
                )
