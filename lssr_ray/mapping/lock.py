"""The run lock of an output store, and the one rule for "is a live run holding this store?".

``<store>/_lock.json`` = ``{run_id, host, pid, heartbeat}`` while a run writes. The holder of a
lock record is **live** (:meth:`StoreLock.live_holder_error`) when

* it is another run id whose heartbeat is younger than ``stale_after_s``: a run elsewhere (or a
  run with other settings) that may still be writing; or
* it is the same run id (same settings), on this host, in another process that is still
  running: a second start of the same run while the first is alive.

Every other record belongs to a dead run and may be taken over: a stale lock of another run id,
or the same run id whose process is gone (a killed run, resumed at once because the run id is a
hash of its settings). Same-id holders on another host cannot be checked and are taken over.
Both the driver's early check (:meth:`StoreLock.refuse_if_live`, before the store is opened,
created or overwritten) and :meth:`StoreLock.acquire` apply this rule.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self

from lssr_ray.errors import StoreLockedError
from lssr_ray.fileio import filesystem, is_remote

log = logging.getLogger(__name__)

LOCK_NAME = "_lock.json"
"""Lock object at the store root."""
DEFAULT_STALE_AFTER_S = 900.0
"""A lock whose heartbeat is older than this many seconds (15 min) may be taken over."""
HEARTBEAT_S = 60.0
"""Seconds between heartbeats of a run holding the lock (:meth:`StoreLock.heartbeat_if_due`)."""


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """Exclusive run lock on a store (see the module docstring for the liveness rule).

    Acquire is an exclusive create (``O_EXCL`` locally; a conditional ``If-None-Match: *`` PUT
    on S3), so two runs cannot both create it. A lock whose holder is not live is taken over;
    the same ``run_id`` re-acquires its own lock (resume). Long runs call :meth:`heartbeat` (or
    :meth:`heartbeat_if_due`) more often than ``stale_after_s``. Use as a context manager;
    release deletes the object.

    Taking over a stale lock deletes it and re-creates it exclusively, so of two runs taking
    over at once at most one normally wins; the loser raises :class:`StoreLockedError`.
    """

    def __init__(
        self,
        url: str,
        run_id: str | None = None,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = str(url)
        self.run_id = run_id or uuid.uuid4().hex
        self.stale_after_s = float(stale_after_s)
        self._fs, root = filesystem(self.url, storage_options)
        self.path = root.rstrip("/") + "/" + LOCK_NAME
        self.held = False
        self._last_beat = time.monotonic()
        self._beat_lock = threading.RLock()  # the kept_alive thread and the caller's loop never write at once

    # -- low level
    def _record(self) -> bytes:
        rec = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat": time.time(),
        }
        return json.dumps(rec).encode()

    def read(self) -> dict[str, Any] | None:
        """The current lock record, or None when unlocked."""
        try:
            raw = self._fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StoreLockedError(
                f"store {self.url}: lock object {self.path} is not valid JSON; if no run is "
                f"writing this store, delete it"
            ) from exc

    def _create_exclusive(self) -> bool:
        data = self._record()
        if not is_remote(self.url):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            try:
                os.link(tmp, self.path)  # exclusive and complete: fails if the lock exists
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
            return True
        try:
            # conditional PUT (If-None-Match: *): S3 refuses it when the object exists
            self._fs.pipe_file(self.path, data, mode="create")
        except FileExistsError:
            return False
        return True

    # -- the liveness rule
    def live_holder_error(self, rec: Mapping[str, Any]) -> StoreLockedError | None:
        """The error naming the holder of lock record ``rec`` if that holder is live (module
        docstring), else None (the record belongs to a dead run and may be taken over)."""
        age = time.time() - float(rec.get("heartbeat", 0))
        rid, pid, host = rec.get("run_id"), int(rec.get("pid", -1)), rec.get("host")
        if rid != self.run_id and age <= self.stale_after_s:
            return StoreLockedError(
                f"store {self.url} is locked by run {rid!r} (host {host}, pid {pid}, heartbeat {age:.0f} s ago); "
                f"wait for it to finish, use another --out, or take it over after {self.stale_after_s:.0f} s "
                "without a heartbeat")
        if rid == self.run_id and host == socket.gethostname() and pid != os.getpid() and pid_alive(pid):
            return StoreLockedError(
                f"store {self.url} is being written by run {rid!r} with the same settings (pid {pid} on this "
                "host, still running); wait for it to finish or stop it, then rerun to resume")
        return None

    def refuse_if_live(self) -> None:
        """:class:`StoreLockedError` if a live run holds the lock; reads the lock only.

        A run asks this before it opens, creates or overwrites the store, so a second run never
        re-initialises or deletes a running run's store.
        """
        rec = self.read()
        err = None if rec is None else self.live_holder_error(rec)
        if err is not None:
            raise err

    # -- public
    def acquire(self) -> Self:
        """Take the lock or raise :class:`StoreLockedError` naming a live holder."""
        for _ in range(3):
            if self._create_exclusive():
                self.held = True
                self._last_beat = time.monotonic()
                return self
            rec = self.read()
            if rec is None:
                continue  # released between our create and read: try again
            err = self.live_holder_error(rec)
            if err is not None:
                raise err
            if rec.get("run_id") == self.run_id:
                self.held = True
                self.heartbeat()
                return self
            log.info("taking over the stale lock of run %r on %s", rec.get("run_id"), self.url)
            try:
                self._fs.rm_file(self.path)  # stale: its run is gone
            except FileNotFoundError:
                pass
        raise StoreLockedError(f"store {self.url}: lost the race for its lock to another run")

    def heartbeat(self) -> None:
        """Refresh the heartbeat; raises :class:`StoreLockedError` if another run took it."""
        rec = self.read()
        if rec is not None and rec.get("run_id") != self.run_id:
            self.held = False
            raise StoreLockedError(
                f"store {self.url}: lock now held by run {rec.get('run_id')!r}, not {self.run_id!r}"
            )
        self._last_beat = time.monotonic()
        if is_remote(self.url):
            self._fs.pipe_file(self.path, self._record())  # one PUT replaces it whole
            return
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(self._record())
        os.replace(tmp, self.path)  # readers never see a half-written record

    def heartbeat_if_due(self, every_s: float = HEARTBEAT_S) -> None:
        """:meth:`heartbeat` when the last one is more than ``every_s`` seconds old (cheap to
        call from a loop: no I/O otherwise)."""
        if time.monotonic() - self._last_beat > every_s:
            with self._beat_lock:
                self.heartbeat()

    @contextmanager
    def kept_alive(self, every_s: float = HEARTBEAT_S, *, poll_s: float = 5.0) -> Iterator[Self]:
        """Heartbeats from a background thread while the block runs: for steps that do not
        loop in this process (Ray Data stages of the finalize step: crop type, overviews,
        counts, hours at state scale), so the lock never looks stale to another run. A lock
        lost meanwhile is raised (:class:`StoreLockedError`) when the block ends."""
        stop, lost = threading.Event(), []

        def beat() -> None:
            while not stop.wait(min(poll_s, every_s)):
                try:
                    self.heartbeat_if_due(every_s)
                except StoreLockedError as exc:
                    lost.append(exc)
                    return

        thread = threading.Thread(target=beat, name="lssr-lock-heartbeat", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
        if lost:
            raise lost[0]

    def release(self) -> None:
        """Delete the lock if this run holds it."""
        if not self.held:
            return
        rec = self.read()
        if rec is not None and rec.get("run_id") == self.run_id:
            self._fs.rm_file(self.path)
        self.held = False

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["DEFAULT_STALE_AFTER_S", "HEARTBEAT_S", "LOCK_NAME", "StoreLock", "pid_alive"]
