"""Alembic migrations per service: each service keeps its own `migrations/` folder and schema.

A service's `migrations/env.py` is one call to `run_env()`; `migrate()` upgrades to head.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from carbon_platform.db import is_sqlite
from carbon_platform.tables import inbox_table, outbox_table


def migrate(*, url: str, schema: str, migrations_dir: Path) -> None:
    """Upgrade the service's database to the newest revision (blocking; call before the loop)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["url"] = url
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


def run_env() -> None:
    """Body of every service's migrations/env.py (online mode only)."""
    url: str = context.config.attributes["url"]
    schema: str = context.config.attributes["schema"]
    asyncio.run(_run_online(url, schema))


async def _run_online(url: str, schema: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if not is_sqlite(url):
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await connection.execute(text(f'SET search_path TO "{schema}"'))
            await connection.run_sync(_run_migrations, None if is_sqlite(url) else schema)
    finally:
        await engine.dispose()


def _run_migrations(connection: Any, schema: str | None) -> None:
    context.configure(connection=connection, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations()


def create_messaging_tables_v1() -> None:
    """The inbox and outbox tables as of version 1, for a service's first migration."""
    metadata = MetaData()
    inbox_table(metadata)
    outbox_table(metadata)
    metadata.create_all(op.get_bind())
