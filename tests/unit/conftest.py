"""Each service on a fresh in-memory database (see tests/unit/support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from notifier.service import SERVICE as NOTIFIER
from registry.service import SERVICE as REGISTRY
from reporting.service import SERVICE as REPORTING
from tests.unit.support import Harness, harness
from verification.service import SERVICE as VERIFICATION


@pytest.fixture
async def registry() -> AsyncIterator[Harness]:
    async with harness(REGISTRY) as service:
        yield service


@pytest.fixture
async def reporting() -> AsyncIterator[Harness]:
    async with harness(REPORTING) as service:
        yield service


@pytest.fixture
async def verification() -> AsyncIterator[Harness]:
    async with harness(VERIFICATION) as service:
        yield service


@pytest.fixture
async def notifier() -> AsyncIterator[Harness]:
    async with harness(NOTIFIER) as service:
        yield service
