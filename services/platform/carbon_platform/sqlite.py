"""SQLite for SQLAlchemy's asyncio engine, without a thread hand-off per call.

SQLAlchemy's `sqlite+aiosqlite` dialect drives aiosqlite, which hands every call to its thread
and back: opening a cursor, executing, fetching and closing are four hand-offs for one statement,
and those hand-offs, not SQLite, were most of a consumed event's cost. This connection offers the
same interface (what the dialect calls of aiosqlite) and splits the work by what can wait:

- what may wait goes to the connection's own thread, so the event loop never blocks on it:
  opening the database, BEGIN (it waits for another writer's lock: every transaction begins
  IMMEDIATE), COMMIT (it waits for the disk) and ROLLBACK;
- a statement inside a transaction runs at once, on the event loop: it holds the lock already,
  and a statement of this platform takes microseconds. Reads outside a transaction do not wait
  either (WAL: readers never block).

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
        if sql.lstrip()[:5].upper() == "BEGIN":
            return await self._connection.run(self._execute, sql, parameters or ())
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
    def __init__(self, sqlite: sqlite3.Connection) -> None:
        self.sqlite = sqlite
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        # Read by SQLAlchemy's aiosqlite adapter: the open connection, its queue, the raw one.
        self._connection: sqlite3.Connection | None = sqlite
        self._tx = _Immediate()
        self._conn = sqlite

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def cursor(self) -> Cursor:
        return Cursor(self)

    @property
    def isolation_level(self) -> str | None:
        return self.sqlite.isolation_level

    async def commit(self) -> None:
        await self.run(self.sqlite.commit)

    async def rollback(self) -> None:
        await self.run(self.sqlite.rollback)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self.sqlite.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            await self.run(self.sqlite.close)
            self._executor.shutdown(wait=False)

    def stop(self) -> None:
        self._connection = None
        self._executor.shutdown(wait=False)


def connector(path: str, timeout: float) -> Callable[[], Any]:
    """The `async_creator` of an engine on the SQLite database file at `path`."""

    async def connect() -> Connection:
        def open_database() -> sqlite3.Connection:
            # Used from the event loop's thread and the connection's, never at the same time.
            return sqlite3.connect(path, timeout=timeout, check_same_thread=False)

        return Connection(await asyncio.to_thread(open_database))

    return connect
