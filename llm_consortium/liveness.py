"""Is the process that started a run still running it?

A run row records its owner: host name, boot id, pid namespace, pid and the
process's start time. A pid alone is not enough: the user directory may be
shared with a container (another pid namespace: the same number is another
process, or none) or with another host (a network filesystem), and pids are
reused. The owner is judged gone only when it is certainly of this machine,
this boot and this pid namespace, and no process with that pid and that start
time exists. Anything else is "cannot tell": such a run is left alone (its
own process records its end) until it is older than ``FOREIGN_STALE_HOURS``.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import socket
from typing import Any

FOREIGN_STALE_HOURS = 24.0


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22
    of ``/proc/PID/stat``); None where there is no ``/proc`` or no such
    process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
    return fields[19] if len(fields) > 19 else None


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, str | None]:
    try:
        pid_ns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    return {
        "host": socket.gethostname(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "pid_ns": pid_ns,
    }


def current_owner() -> dict[str, Any]:
    """This process, as recorded on the runs it starts."""
    pid = os.getpid()
    return {**_machine(), "pid": pid, "start": process_start(pid)}


def owner_json() -> str:
    return json.dumps(current_owner(), sort_keys=True)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def _older_than(created_at: Any, hours: float) -> bool:
    if not isinstance(created_at, str):
        return False
    try:
        moment = datetime.datetime.fromisoformat(created_at)
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    age = datetime.datetime.now(datetime.timezone.utc) - moment
    return age > datetime.timedelta(hours=hours)


def owner_gone(owner: Any, created_at: Any) -> bool:
    """True when the process that started a run (its recorded ``owner``
    JSON) certainly no longer runs it. An owner of another host, boot or pid
    namespace — or a row without a readable owner, from an older version —
    cannot be checked: only ``FOREIGN_STALE_HOURS`` after ``created_at``."""
    try:
        recorded = json.loads(owner) if isinstance(owner, str) else None
    except ValueError:
        recorded = None
    here = _machine()
    if (
        not isinstance(recorded, dict)
        or not isinstance(recorded.get("pid"), int)
        or here["boot_id"] is None
        or any(recorded.get(key) != here[key] for key in ("host", "boot_id", "pid_ns"))
    ):
        return _older_than(created_at, FOREIGN_STALE_HOURS)
    pid = recorded["pid"]
    if pid == os.getpid():
        return recorded.get("start") != process_start(pid)
    if not _pid_exists(pid):
        return True
    start = process_start(pid)
    return start is not None and start != recorded.get("start")  # the pid was reused
