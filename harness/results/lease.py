"""Leases on runs: a claim that carries its holder's host, PID and a heartbeat.

A lease is a file (`<run_id>.lock` in the suite's results folder) created with O_CREAT | O_EXCL.
Its text names the holder (host, PID, process start time, a random token, the heartbeat timeout
it promises to keep); its modification time is the heartbeat, refreshed by a daemon thread of the
holder every `timeout / 5` seconds. A lease is stale, and the next claimant takes it over, when

- its holder ran on this host and that process is gone (killed, crashed, PID reused): at once;
- its heartbeat is older than its timeout, on any host (a lost node, a frozen process);
- it is empty or unreadable and older than a few seconds (its writer died between create and write).

A holder whose lease was taken over learns it at its next heartbeat (the file is gone, or holds
another token) and at every `check()`; the runner checks before each write and each checkpoint
save, so such a worker stops without writing. Heartbeats compare file times with this host's
clock: hosts of one cluster are assumed to agree within a small part of the timeout.

Nothing here knows which executor runs the worker: in-process, SLURM tasks and Ray tasks all
claim runs the same way through the shared results folder.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

TIMEOUT_ENV = "HARNESS_LEASE_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0  # a heartbeat every minute; a lost host's runs are taken over after 5
HEARTBEATS_PER_TIMEOUT = 5
JUST_CREATED_S = 5.0


class LeaseLost(Exception):
    """This worker's lease was taken over by another worker: it must stop without writing."""


def lease_timeout() -> float:
    """The heartbeat timeout in seconds: $HARNESS_LEASE_TIMEOUT, or 300."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise HarnessError(f"${TIMEOUT_ENV}={text!r}: give the lease timeout in seconds, a positive number")
    return value


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None. With the
    PID it identifies a process even after its PID has been reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def owner_is_alive(owner: dict[str, Any]) -> bool:
    """Whether the process named by a lease still runs, as far as this host can tell: a holder on
    another host cannot be checked (its heartbeat decides) and counts as alive here."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False  # unreadable lease: its writer died between create and write
    if not _pid_alive(pid):
        return False
    start = owner.get("start")
    return start is None or process_start(pid) in (None, start)


def read_lease(path: Path) -> tuple[dict[str, Any] | None, str | None, float | None]:
    """(owner, raw text, heartbeat time) of a lease file; (None, None, None) when there is none."""
    try:
        text = path.read_text()
        heartbeat = path.stat().st_mtime
    except FileNotFoundError:
        return None, None, None
    try:
        owner = json.loads(text)
    except ValueError:
        owner = {}
    return (owner if isinstance(owner, dict) else {}), text, heartbeat


def is_stale(owner: dict[str, Any] | None, heartbeat: float, *, timeout: float, now: float | None = None) -> bool:
    """Whether a lease with this owner and heartbeat may be taken over (see the module's rules).
    The holder's own promised timeout wins over the claimant's, so mixed settings agree."""
    age = (time.time() if now is None else now) - heartbeat
    if not owner:
        return age > JUST_CREATED_S
    try:
        limit = float(owner.get("timeout") or timeout)
    except (TypeError, ValueError):
        limit = timeout
    return age > limit or not owner_is_alive(owner)


class Lease:
    """A held claim on one run. Keeps its heartbeat until `release` (or the end of a `with`)."""

    def __init__(self, path: Path, owner: dict[str, Any], timeout: float):
        self.path = path
        self.owner = owner
        self.timeout = timeout
        self.lost = False
        self.released = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{path.stem}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = self.timeout / HEARTBEATS_PER_TIMEOUT
        while not self._stop.wait(interval):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Refresh the heartbeat; False (and `lost`) when the lease is no longer ours. Touching a
        file that another worker has just created only refreshes that live worker's lease."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            self.lost = True
            return False
        except OSError:
            return True  # a hiccup of the shared filesystem: the next beat tries again
        return self.held()

    def held(self) -> bool:
        """Whether the lease file still carries this holder's token."""
        if self.lost or self.released:
            return False
        owner, _, _ = read_lease(self.path)
        if not owner or owner.get("token") != self.owner["token"]:
            self.lost = True
            return False
        return True

    def check(self) -> None:
        """Raise LeaseLost unless this worker still holds the lease (called before every write)."""
        if not self.held():
            raise LeaseLost(f"{self.path.stem}: taken over by another worker; stopping without writing")

    def stop_heartbeat(self) -> None:
        """Stop refreshing the heartbeat (release does it too; tests use it to freeze a holder)."""
        self._stop.set()

    def release(self) -> None:
        """Give the run up: stop the heartbeat and delete the lease if it is still ours."""
        if self.released:
            return
        self.stop_heartbeat()
        mine = self.held()
        self.released = True
        if mine:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def new_owner(timeout: float) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid), "token": secrets.token_hex(8),
            "timeout": timeout, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def try_acquire(path: Path, *, timeout: float | None = None, owner: dict[str, Any] | None = None) -> Lease | None:
    """Take the lease at `path`: a Lease, or None while a live holder keeps it. A stale lease is
    taken over. `owner` replaces this process's identity (tests simulate other hosts with it)."""
    timeout = lease_timeout() if timeout is None else timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder, seen, heartbeat = read_lease(path)
            if seen is None:
                continue  # released meanwhile: try again
            if not is_stale(holder, heartbeat, timeout=timeout):
                return None
            _break_stale(path, seen, timeout)
            continue
        me = {**new_owner(timeout), **(owner or {})}
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return Lease(path, me, timeout)
    return None


def live_holder(path: Path, *, timeout: float | None = None) -> dict[str, Any] | None:
    """The holder of a lease that is not stale, or None (no lease, or a stale one)."""
    holder, seen, heartbeat = read_lease(path)
    if seen is None or not holder:
        return None
    if is_stale(holder, heartbeat, timeout=lease_timeout() if timeout is None else timeout):
        return None
    return holder


def _break_stale(path: Path, seen: str, timeout: float) -> None:
    """Remove the stale lease whose text was `seen`. The file is renamed away first (only one
    claimant can rename a given file); if what was renamed is not that stale lease (another
    claimant took over in between, or its holder's heartbeat came back), it is put back with a
    link, which fails if yet another lease exists: then that one stands."""
    grave = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.stale")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    try:
        owner, text, heartbeat = read_lease(grave)
        if text != seen or (heartbeat is not None and not is_stale(owner, heartbeat, timeout=timeout)):
            try:
                os.link(grave, path)
            except FileExistsError:
                pass
    finally:
        grave.unlink(missing_ok=True)
