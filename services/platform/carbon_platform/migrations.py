"""Alembic migrations per service: each service keeps its own `migrations/` folder and schema.

A service's `migrations/env.py` is one call to `run_env()`; `migrate()` upgrades to head.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from carbon_platform.db import is_sqlite, sqlite_begin, sqlite_pragmas


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
    # Several instances of a service may start at once: the first to take the lock migrates,
    # the others wait for it and then find nothing left to do.
    if is_sqlite(url):
        engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 60})
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", sqlite_begin)
    else:
        engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if not is_sqlite(url):
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:lock))"),
                    {"lock": f"carbon-migrations-{schema}"},
                )
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
    """The inbox and outbox tables as of version 1, for a service's first migration (frozen:
    later versions change them in migrations of their own)."""
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_pending", "outbox", ["published_at", "id"])


def upgrade_messaging_tables_v2() -> None:
    """Version 2: where each outbox row was published (checked against the broker), parked
    rows, an index by topic (history republished per topic) and the relay lease that lets one
    instance of several publish."""
    with op.batch_alter_table("outbox") as outbox:
        outbox.add_column(sa.Column("partition", sa.Integer, nullable=True))
        outbox.add_column(sa.Column("offset", sa.BigInteger, nullable=True))
        outbox.add_column(sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
        outbox.add_column(sa.Column("park_reason", sa.String(500), nullable=True))
    op.create_index("ix_outbox_topic", "outbox", ["topic", "id"])
    op.create_index("ix_outbox_parked", "outbox", ["parked_at"])
    lease = op.create_table(
        "outbox_lease",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(
        lease, [{"name": "relay", "holder": "", "expires_at": datetime(1970, 1, 1, tzinfo=UTC)}]
    )


def create_obligation_tables_v1() -> None:
    """The tables of carbon_platform.obligations as of version 1, for the migration of a
    service that owns obligations with deadlines (frozen, as the messaging tables are)."""
    key = (
        sa.Column("credit_code", sa.String(18), primary_key=True),
        sa.Column("compliance_year", sa.Integer, primary_key=True),
        sa.Column("obligation", sa.String(32), primary_key=True),
    )
    statuses = "('open', 'overdue', 'done_on_time', 'done_late')"
    op.create_table(
        "obligation_status",
        *(column._copy() for column in key),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("district", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("missing", sa.String(500), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("case_opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalates_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"status IN {statuses}", name="ck_obligation_status"),
        sa.CheckConstraint(
            "(status IN ('done_on_time', 'done_late')) = (done_at IS NOT NULL)",
            name="ck_obligation_done_at",
        ),
    )
    op.create_index(
        "ix_obligation_status_deadline",
        "obligation_status",
        ["compliance_year", "obligation", "status"],
    )
    op.create_index(
        "ix_obligation_status_district", "obligation_status", ["district", "obligation"]
    )
    changes = "('enrolled', 'reminded', 'overdue', 'escalated', 'done_on_time', 'done_late')"
    op.create_table(
        "obligation_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("compliance_year", sa.Integer, nullable=False),
        sa.Column("obligation", sa.String(32), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.String(500), nullable=True),
        sa.CheckConstraint(f"change IN {changes}", name="ck_obligation_history_change"),
    )
    op.create_index(
        "ix_obligation_history_entity",
        "obligation_history",
        ["credit_code", "compliance_year", "obligation"],
    )
    op.create_table(
        "deadline_passes",
        sa.Column("compliance_year", sa.Integer, primary_key=True),
        sa.Column("obligation", sa.String(32), primary_key=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("passed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("obligated", sa.Integer, nullable=False),
        sa.Column("done_on_time", sa.Integer, nullable=False),
        sa.Column("overdue", sa.Integer, nullable=False),
    )
    op.create_table(
        "deadline_overdue",
        sa.Column("compliance_year", sa.Integer, primary_key=True),
        sa.Column("obligation", sa.String(32), primary_key=True),
        sa.Column("credit_code", sa.String(18), primary_key=True),
        sa.Column("district", sa.String(64), nullable=False),
        sa.Column("missing", sa.String(500), nullable=True),
    )
    op.create_table(
        "obligation_reminders",
        *(column._copy() for column in key),
        sa.Column("seconds_before", sa.Integer, primary_key=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )
