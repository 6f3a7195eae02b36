"""Each service's migrations build exactly the schema its tables declare (constraints and indexes
included), on SQLite and, when CARBON_TEST_DATABASE_URL is set, on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from carbon_platform.context import ServiceDefinition
from carbon_platform.migrations import migrate
from notifier.service import SERVICE as NOTIFIER
from registry.service import SERVICE as REGISTRY
from reporting.service import SERVICE as REPORTING
from tests.support import Database
from verification.service import SERVICE as VERIFICATION

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "service", [REPORTING, VERIFICATION, REGISTRY, NOTIFIER], ids=lambda s: s.name
)
def test_the_migrations_build_the_declared_schema(
    service: ServiceDefinition, tmp_path: Path
) -> None:
    database = Database.for_test()
    schema = f"{database.schema_prefix}{service.name}"
    url = database.url or f"sqlite+aiosqlite:///{tmp_path / service.name}.db"
    migrate(url=url, schema=schema, migrations_dir=service.migrations_dir)
    migrate(url=url, schema=schema, migrations_dir=service.migrations_dir)  # again: no-op

    async def differences() -> list[Any]:
        connect_args = {"server_settings": {"search_path": schema}} if database.url else {}
        engine = create_async_engine(url, connect_args=connect_args)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync), service.metadata
                    )
                )
        finally:
            await engine.dispose()

    try:
        found = asyncio.run(differences())
    finally:
        database.drop([service.name])
    # The version table is Alembic's own, not the service's.
    assert [d for d in found if "alembic_version" not in str(d)] == []
