"""SQLite for SQLAlchemy's asyncio engine, without a thread hand-off per call.

SQLAlchemy's `sqlite+aiosqlite` dialect drives aiosqlite, which hands every call to its thread
and back: opening a cursor, executing, fetching and closing are four hand-offs for one statement,
and those hand-offs, not SQLite, were most of a consumed event's cost. This connection offers the
same interface (what the dialect calls of aiosqlite) and splits the work by what can wait:

- what may wait goes to the connection's own thread, so the event loop never blocks on it:
  opening the database, a writer's BEGIN IMMEDIATE when another process writes (the writers of
  this process take turns on an asyncio lock first, and a free lock is taken at once), and a
  COMMIT or ROLLBACK of a transaction that wrote (it waits for the disk);
- a statement inside a transaction runs at once, on the event loop: a writer holds the lock
  already, a reader needs none (WAL), and a statement of this platform takes microseconds.

So no code may await anything but the database inside a transaction (none does): a second
transaction of the same process would wait for the first on the event loop, which the first
then could not finish on.

Used through `create_async_engine(url, async_creator=connector(path, timeout))`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Cursor:
    """A statement's results, fetched in full as it runs."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        statement = sql.lstrip().upper()
        if statement.startswith("BEGIN"):
            self._connection.changes_at_begin = self._connection.sqlite.total_changes
            if statement.startswith(("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")):
                # A writer: waits for the write lock; a reader's plain BEGIN waits for nothing.
                await self._connection.begin_writing()
                try:
                    if self._connection.try_at_once(sql):
                        return self
                    return await self._connection.run(self._execute, sql, parameters or ())
                except BaseException:
                    self._connection.done_writing()
                    raise
        return self._execute(sql, parameters or ())

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        return self._executemany(sql, list(parameters))

    def _execute(self, sql: str, parameters: Sequence[Any]) -> Cursor:
        return self._take(self._connection.sqlite.execute(sql, parameters))

    def _executemany(self, sql: str, parameters: list[Sequence[Any]]) -> Cursor:
        return self._take(self._connection.sqlite.executemany(sql, parameters))

    def _take(self, cursor: sqlite3.Cursor) -> Cursor:
        try:
            self.description = cursor.description
            self._rows = cursor.fetchall() if cursor.description else []
            self.rowcount = cursor.rowcount
            self.lastrowid = cursor.lastrowid
        finally:
            cursor.close()
        return self

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = size or self.arraysize
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def nextset(self) -> None:
        return None

    async def close(self) -> None:
        self._rows = []


class _Immediate:
    """What the dialect puts on aiosqlite's queue to set the isolation level: done at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        future.set_result(function())


class Connection:
    def __init__(
        self, sqlite: sqlite3.Connection, writers: asyncio.Lock, busy_timeout_ms: int
    ) -> None:
        self.sqlite = sqlite
        self._busy_timeout_ms = busy_timeout_ms
        # The process's writers on this file take turns here rather than in SQLite's busy
        # handler, which sleeps and polls (a writer of another process still waits there).
        self._writers = writers
        self._writing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        # Read by SQLAlchemy's aiosqlite adapter: the open connection, its queue, the raw one.
        self._connection: sqlite3.Connection | None = sqlite
        self._tx = _Immediate()
        self._conn = sqlite
        self.changes_at_begin = -1  # total_changes when the transaction began

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def cursor(self) -> Cursor:
        return Cursor(self)

    @property
    def isolation_level(self) -> str | None:
        return self.sqlite.isolation_level

    async def begin_writing(self) -> None:
        await self._writers.acquire()
        self._writing = True

    def try_at_once(self, begin: str) -> bool:
        """BEGIN IMMEDIATE without waiting: true when the write lock was free (no other
        process writes), so no hand-off to the connection's thread was needed."""
        self.sqlite.execute("PRAGMA busy_timeout = 0")
        try:
            self.sqlite.execute(begin)
            return True
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            return False
        finally:
            self.sqlite.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")

    def done_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._writers.release()

    async def commit(self) -> None:
        await self._end(self.sqlite.commit)

    async def rollback(self) -> None:
        await self._end(self.sqlite.rollback)

    async def _end(self, end: Callable[[], None]) -> None:
        try:
            if self.sqlite.total_changes == self.changes_at_begin:
                end()  # nothing written: nothing to wait for
            else:
                await self.run(end)
        finally:
            self.done_writing()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self.sqlite.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.done_writing()
        if self._connection is not None:
            self._connection = None
            await self.run(self.sqlite.close)
            self._executor.shutdown(wait=False)

    def stop(self) -> None:
        self.done_writing()
        self._connection = None
        self._executor.shutdown(wait=False)


def connector(path: str, timeout: float) -> Callable[[], Any]:
    """The `async_creator` of an engine on the SQLite database file at `path`."""

    writers = asyncio.Lock()

    async def connect() -> Connection:
        def open_database() -> sqlite3.Connection:
            # Used from the event loop's thread and the connection's, never at the same time.
            return sqlite3.connect(path, timeout=timeout, check_same_thread=False)

        return Connection(await asyncio.to_thread(open_database), writers, int(timeout * 1000))

    return connect
