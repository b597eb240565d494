"""A per-mailbox limit on concurrent Graph requests that holds across processes.

Graph allows 4 concurrent requests per app and mailbox and answers the fifth with 429
``ApplicationThrottled`` / "MailboxConcurrency". Requests for one mailbox come from several processes at
once: the run workers of concurrent runs (a UI backfill's range runs carry no mailbox tag that Dagster's
run queue could limit on) and the delta sensor in the daemon. So the limit is held where every request
passes: a gate of N slots per mailbox, taken for the duration of each request.

- With a PostgreSQL store (production), a slot is a session-level advisory lock ``(mailbox hash, slot)``:
  it spans every machine that shares the database and is released by PostgreSQL if the holder dies.
- Otherwise (the embedded SQLite default, one machine) a slot is a ``filelock`` lock file under the Dagster
  home (an ``flock``, released by the kernel if the holder dies).

A request first tries every slot without waiting, then waits on one slot, bounded by ``wait_timeout_s``:
a request that cannot get a slot fails loudly rather than waiting for ever.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import filelock
import sqlalchemy as sa

from atom_pipelines.store.resource import engine_for


class GateTimeoutError(TimeoutError):
    """No slot of the mailbox's gate came free in time."""


def _mailbox_key(mailbox: str) -> int:
    """A stable signed 32-bit key for the mailbox (advisory locks take int4 pairs)."""
    value = zlib.crc32(f"atom-graph-gate:{mailbox.lower()}".encode())
    return value - 2**32 if value >= 2**31 else value


class PostgresGate:
    def __init__(self, database_url: str, slots: int, wait_timeout_s: float) -> None:
        self.slots = slots
        self.wait_timeout_s = wait_timeout_s
        # The store's engine (one pool per database and process): a slot is held on a pooled connection for
        # one HTTP request. An engine per gate would leave a pool behind every sensor tick in the daemon.
        self._engine = engine_for(database_url)

    @contextlib.contextmanager
    def slot(self, mailbox: str) -> Iterator[int]:
        key = _mailbox_key(mailbox)
        with self._engine.connect() as conn:
            taken = None
            for index in range(self.slots):
                if conn.execute(sa.text("select pg_try_advisory_lock(:k, :s)"), {"k": key, "s": index}).scalar():
                    taken = index
                    break
            if taken is None:
                taken = random.randrange(self.slots)
                conn.execute(sa.text(f"set lock_timeout = {int(self.wait_timeout_s * 1000)}"))
                try:
                    conn.execute(sa.text("select pg_advisory_lock(:k, :s)"), {"k": key, "s": taken})
                except sa.exc.OperationalError as exc:
                    raise GateTimeoutError(
                        f"no Graph request slot for {mailbox} within {self.wait_timeout_s:.0f} s "
                        f"({self.slots} requests of this mailbox in flight elsewhere)"
                    ) from exc
                finally:
                    conn.execute(sa.text("set lock_timeout = 0"))
            conn.commit()
            try:
                yield taken
            finally:
                conn.execute(sa.text("select pg_advisory_unlock(:k, :s)"), {"k": key, "s": taken})
                conn.commit()


class FileGate:
    def __init__(self, directory: Path, slots: int, wait_timeout_s: float) -> None:
        self.directory = directory
        self.slots = slots
        self.wait_timeout_s = wait_timeout_s

    @contextlib.contextmanager
    def slot(self, mailbox: str) -> Iterator[int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = f"{_mailbox_key(mailbox) & 0xFFFFFFFF:08x}"
        locks = [filelock.FileLock(self.directory / f"{key}.{index}.lock") for index in range(self.slots)]
        taken = None
        for index, lock in enumerate(locks):
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue
            taken = index
            break
        if taken is None:
            taken = random.randrange(self.slots)
            try:
                locks[taken].acquire(timeout=self.wait_timeout_s)
            except filelock.Timeout as exc:
                raise GateTimeoutError(
                    f"no Graph request slot for {mailbox} within {self.wait_timeout_s:.0f} s "
                    f"({self.slots} requests of this mailbox in flight elsewhere)"
                ) from exc
        try:
            yield taken
        finally:
            locks[taken].release()


def gate_for(database_url: str, lock_dir: Path, slots: int, wait_timeout_s: float) -> PostgresGate | FileGate:
    if sa.engine.make_url(database_url).get_backend_name() == "postgresql":
        return PostgresGate(database_url, slots, wait_timeout_s)
    return FileGate(lock_dir, slots, wait_timeout_s)
