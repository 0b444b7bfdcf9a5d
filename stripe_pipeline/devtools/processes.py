"""Child processes of the demo: started in their own sessions, killed by process group.

A backgrounded ``dagster dev`` ignores SIGINT and SIGTERM, and a terminal's Ctrl-C
only reaches the foreground process group. So every child gets its own session
(``start_new_session=True``) and the supervisor, not the terminal, ends it: SIGTERM
to the group, a short grace period, then SIGKILL to the group and to every
descendant that moved to another group. ``atexit`` and signal handlers make sure
this also happens when the demo dies of an exception or a SIGTERM/SIGHUP.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

GRACE_SECONDS = 3.0
PR_SET_PDEATHSIG = 1


class StartupError(RuntimeError):
    """A child exited or did not become ready; the message points at its log."""


def descendants(pid: int) -> set[int]:
    """All live descendants of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def descendants_running(pid: int, module: str) -> list[int]:
    """Descendants of ``pid`` whose command line runs ``module`` (``python -m module``)."""
    found = []
    for child in sorted(descendants(pid)):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if module.encode() in argv:
            found.append(child)
    return found


def orphans_of_dead_demos(owner_env: str, owner_value: str, demo_pid_env: str) -> list[int]:
    """Processes left behind by an earlier demo that was killed hard (SIGKILL, a crash).

    A demo's children carry ``owner_env=owner_value`` (its data folder) and the demo's
    pid in their environment; Dagster's webserver, daemon and code servers survive a
    SIGKILLed ``dagster dev``, so the next run finds them by that mark.
    """
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _environ(int(entry.name))
        if env.get(owner_env) != owner_value or not env.get(demo_pid_env, "").isdigit():
            continue
        if not is_alive(int(env[demo_pid_env])):
            found.append(int(entry.name))
    return found


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return state[state.rfind(")") + 2 :].split()[0] != "Z"


def group_alive(pgid: int) -> bool:
    """True while any process of the group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the demo itself dies (even by SIGKILL).

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere the atexit handler is all there is.
    Grandchildren go too: Dagster's webserver and daemon watch a shutdown pipe, and
    gunicorn workers exit when their master is gone.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    """One supervised process: its own session, output appended to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    known_pids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def remember_descendants(self) -> None:
        """Note the current process tree, so a descendant that left the group dies too."""
        self.known_pids |= descendants(self.pid)


class Supervisor:
    """Starts children and guarantees that every one of them is gone when it stops."""

    def __init__(self, log_dir: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.cwd = cwd
        self.children: list[Child] = []
        self._stopped = False
        log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)

    def start(self, name: str, argv: Sequence[str], extra_env: Mapping[str, str] | None = None):
        """Start ``argv`` in a new session; stdout and stderr go to ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log_file.flush()
        env = {**self.env, **(extra_env or {})}
        process = subprocess.Popen(
            list(argv),
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        child = Child(name, process, log_path, log_file)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        """Raise if a child died: the demo is useless without any of its parts."""
        for child in self.children:
            child.remember_descendants()
            if not child.running():
                raise StartupError(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"last lines of {child.log_path}:\n{child.log_tail()}"
                )

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def process_groups(self) -> dict[str, int]:
        return {child.name: child.pid for child in self.children}

    def stop(self) -> None:
        """SIGTERM every group, wait briefly, then SIGKILL groups and known descendants."""
        if self._stopped:
            return
        self._stopped = True
        # a second Ctrl-C must not interrupt the cleanup half-way
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
        for child in self.children:
            child.remember_descendants()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(c.running() for c in self.children):
            time.sleep(0.1)
        for child in reversed(self.children):
            child.remember_descendants()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            for pid in child.known_pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=10)
            child.log_file.close()
        # descendants re-parented to init are reaped by it; give the kernel a moment
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            group_alive(c.pid) or any(is_alive(p) for p in c.known_pids) for c in self.children
        ):
            time.sleep(0.05)


def install_signal_handlers(on_signal: Callable[[int], None]) -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into the same orderly shutdown as Ctrl-C.

    SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then
    never raises KeyboardInterrupt; the demo must stop on ``kill -INT`` regardless.
    """

    def handler(signum: int, _frame: Any) -> None:
        on_signal(signum)
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def http_ready(url: str, timeout: float = 1.0) -> bool:
    """True once ``url`` answers with any HTTP status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def wait_until(
    what: str,
    ready: Callable[[], bool],
    supervisor: Supervisor,
    timeout: float,
    interval: float = 0.25,
) -> None:
    """Poll ``ready`` until true; fail fast with the log tail if a child died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.check_alive()
        if ready():
            return
        time.sleep(interval)
    raise StartupError(f"{what} not ready after {timeout:.0f} s")


def post_json(url: str, body: Mapping[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """POST JSON and decode the JSON answer (used for Dagster's GraphQL endpoint)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
