"""Async database access: one engine per service, its own schema, short transactions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Executable, Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from carbon_platform.settings import Settings
from carbon_platform.sqlite import connector


class Upsert:
    """An INSERT ... ON CONFLICT, which each dialect (PostgreSQL, SQLite) spells its own way,
    built once for each: `build` gets the dialect's `insert` and returns the statement; rows go
    in as execution parameters. (Executing a prepared statement costs a third of building one.)
    """

    def __init__(self, build: Callable[[Callable[[Table], Any]], Executable]) -> None:
        self._by_dialect = {"postgresql": build(pg_insert), "sqlite": build(sqlite_insert)}

    def on(self, conn: AsyncConnection) -> Executable:
        return self._by_dialect[conn.dialect.name]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(settings: Settings) -> AsyncEngine:
    url = settings.resolved_database_url()
    if is_sqlite(url):
        path = make_url(url).database or ":memory:"
        # An in-memory database (unit tests) lives as long as its one connection.
        memory = {"poolclass": StaticPool} if path == ":memory:" else {}
        engine = create_async_engine(url, async_creator=connector(path, timeout=30), **memory)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", sqlite_begin)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        # The service's tables live in its own schema; other services' schemas are not visible.
        connect_args={"server_settings": {"search_path": settings.resolved_schema()}},
    )


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin, so that
    # SAVEPOINTs work (SQLAlchemy's documented pysqlite/aiosqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


READ_ONLY = "carbon_read_only"


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for queries: on SQLite their transactions begin DEFERRED, so
    a reader never waits for the write lock (WAL readers see the last commit)."""
    return engine.execution_options(**{READ_ONLY: True})


def sqlite_begin(conn: Any) -> None:
    # A writer takes the write lock up front: a deferred transaction that later writes fails at
    # once with SQLITE_BUSY instead of waiting when another connection wrote meanwhile.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
