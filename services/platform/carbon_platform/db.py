"""Async database access: one engine per service, its own schema, short transactions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from carbon_platform.settings import Settings


def upsert(conn: AsyncConnection, table: Table) -> Any:
    """INSERT with ON CONFLICT clauses, in the connection's dialect (PostgreSQL or SQLite)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return insert(table)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(settings: Settings) -> AsyncEngine:
    url = settings.resolved_database_url()
    if is_sqlite(url):
        # An in-memory database (unit tests) lives as long as its one connection.
        memory = {"poolclass": StaticPool} if url.rstrip("/").endswith((":memory:", ":")) else {}
        engine = create_async_engine(url, connect_args={"timeout": 30}, **memory)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        # The service's tables live in its own schema; other services' schemas are not visible.
        connect_args={"server_settings": {"search_path": settings.resolved_schema()}},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin, so that
    # SAVEPOINTs work (SQLAlchemy's documented pysqlite/aiosqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Take the write lock up front: a deferred transaction that later writes fails at once with
    # SQLITE_BUSY instead of waiting when another connection wrote meanwhile.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
