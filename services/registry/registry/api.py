"""Registry HTTP API: routes parse, authorise, call a command and answer with its typed view;
queries read the database."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from carbon_contracts.errors import NotFound
from carbon_contracts.types import Identifier
from carbon_platform.access import ENTITY, OPERATIONS, Owner, allowed
from carbon_platform.auth import Principal, current_principal
from carbon_platform.context import Context
from carbon_platform.http import refusals
from registry import allocation, commands, store
from registry.domain.credit_code import checked_credit_code
from registry.schemas import (
    Account,
    ComplianceView,
    EntityStatus,
    Holding,
    ImportRow,
    OpenAccount,
    RegisteredEntity,
    Registration,
    RosterImport,
    RosterUpload,
    Surrender,
    SurrenderReceipt,
    SurrenderRequest,
)
from registry.uploads import csv_body

router = APIRouter(tags=["registry"])
ROSTER_UPLOAD_BYTES = 64 * 1024 * 1024
"""A roster CSV may be this large (the platform's default body limit is far smaller)."""


async def entity_code(credit_code: str, _: Annotated[Principal, Depends(current_principal)]) -> str:
    """The path's credit code, validated (GB 32100 check characters included) and normalised;
    after the caller's token, so that no token is 401 whatever the path."""
    return checked_credit_code(credit_code)


EntityCode = Annotated[str, Depends(entity_code)]


@router.post(
    "/entities", status_code=201, responses=refusals(403, 409), response_model=RegisteredEntity
)
async def register_entity(
    body: Registration,
    context: Context,
    _: Annotated[Principal, allowed(ENTITY, "register")],
) -> RegisteredEntity:
    """The Bureau puts a covered entity on the year's roster (`entity.registered`)."""
    return await context.execute(commands.register_entity, body)


@router.post(
    "/entities/{credit_code}/account",
    status_code=201,
    responses=refusals(403, 404, 409),
    response_model=Account,
)
async def open_account(
    code: EntityCode,
    context: Context,
    principal: Annotated[Principal, allowed(ENTITY, "open_account")],
) -> Account:
    """The entity (or the Bureau for it) opens its allowance account, once (`account.opened`)."""
    ENTITY.check_entity(principal, "open_account", code)
    return await context.execute(commands.open_account, OpenAccount(credit_code=code))


@router.post(
    "/entities/{credit_code}/surrenders",
    status_code=201,
    responses=refusals(403, 404, 409),
    response_model=SurrenderReceipt,
)
async def surrender(
    code: EntityCode,
    body: SurrenderRequest,
    context: Context,
    principal: Annotated[Principal, allowed(ENTITY, "surrender")],
) -> SurrenderReceipt:
    """Surrender allowances and offsets (cancellation proofs by type and id) for a year, all or
    nothing; meeting the whole obligation completes compliance (`surrender.completed`) and
    issues next year's pre-allocation (`preallocation.issued`)."""
    ENTITY.check_entity(principal, "surrender", code)
    return await context.execute(
        commands.surrender, Surrender(credit_code=code, **body.model_dump())
    )


@router.get("/entities/{credit_code}", responses=refusals(403, 404), response_model=EntityStatus)
async def entity_status(
    code: EntityCode,
    context: Context,
    principal: Annotated[Principal, allowed(ENTITY, "read")],
) -> EntityStatus:
    """Entity, accounts (registry, exchange), holdings by vintage, compliance status per year."""
    ENTITY.check_entity(principal, "read", code)  # before the lookup: a 404 tells it nothing
    async with context.reader.connect() as conn:
        entity = await store.known_entity(conn, credit_code=code)
        ENTITY.check(principal, "read", Owner(credit_code=code, district=entity.district))
        account = await store.get_account(conn, credit_code=code)
        trading = await store.get_trading_account(conn, credit_code=code)
        holdings = await store.get_holdings(conn, credit_code=code)
        surrender_only = await store.get_surrender_only(conn, credit_code=code)
        obligations = await store.list_obligations(conn, credit_code=code)
        previews = await store.list_previews(conn, credit_code=code)
    allocations = {row.compliance_year: row for row in previews}
    return EntityStatus(
        credit_code=code,
        name=entity.name,
        district=entity.district,
        sector=entity.sector,
        account_id=account.account_id if account else None,
        trading_account_id=trading.trading_account_id if trading else None,
        holdings=[Holding(vintage=v, allowances=n) for v, n in holdings.items()],
        surrender_only=[Holding(vintage=v, allowances=n) for v, n in surrender_only.items()],
        total_allowances=sum(holdings.values()) + sum(surrender_only.values()),
        compliance=[
            _compliance_view(row, allocations.get(row.compliance_year)) for row in obligations
        ],
    )


def _compliance_view(row: Any, preview: Any) -> ComplianceView:
    return ComplianceView(
        compliance_year=row.compliance_year,
        verified_emissions=row.verified_emissions,
        obligation=row.obligation,
        surrendered=row.surrendered,
        offsets_surrendered=row.offsets_surrendered,
        remaining=row.obligation - row.surrendered,
        status="compliant" if row.completed_at else "open",
        completed_at=row.completed_at,
        on_time=row.on_time,
        allocation=allocation.allocation_summary(preview) if preview else None,
    )


class District(BaseModel):
    code: Identifier = Field(description="the platform's code: an entity's `district`")
    name: str = Field(description="the district bureau's district or the zone committee's zone")


@router.get("/districts", responses=refusals(403), response_model=list[District])
async def districts(
    context: Context, _: Annotated[Principal, allowed(ENTITY, "read")]
) -> list[District]:
    """The district bureaus and zone committees an entity may be registered under, in the
    policy's order: a registration naming any other district is refused."""
    return [District(code=code, name=name) for code, name in context.policy.districts.items()]


Operator = Annotated[Principal, allowed(OPERATIONS, "operate")]


@router.post(
    "/roster/imports",
    status_code=202,
    responses=refusals(403, 415),
    response_model=RosterImport,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "header: credit_code,name,district,sector,compliance_year"
            "[,new_entrant]; UTF-8; one entity per row",
        }
    },
)
async def upload_roster(
    request: Request, response: Response, context: Context, principal: Operator
) -> RosterImport:
    """The Bureau uploads the year's roster as CSV. Answers at once with the upload's id; rows
    are then registered in the background, each with its own result (`entity.registered` for
    every row registered). Follow it at `Location`."""
    text = await csv_body(request, "the roster")
    upload = await context.execute(
        commands.upload_roster, RosterUpload(text=text, uploaded_by=principal.subject)
    )
    response.headers["Location"] = f"/roster/imports/{upload.import_id}"
    return upload


@router.get(
    "/roster/imports/{import_id}", responses=refusals(403, 404), response_model=RosterImport
)
async def roster_import(import_id: str, context: Context, _: Operator) -> RosterImport:
    """How far an upload has got: rows done, registered and refused."""
    async with context.reader.connect() as conn:
        row = await store.get_roster_import(conn, import_id=import_id)
        if row is None:
            raise NotFound("unknown_import", f"no roster upload {import_id}")
        counts = await store.count_rows_by_status(conn, import_id=import_id)
    registered, refused = counts.get("registered", 0), counts.get("refused", 0)
    return RosterImport(
        import_id=row.import_id,
        status="done" if row.finished_at else ("running" if registered + refused else "pending"),
        rows=row.rows,
        done=registered + refused,
        registered=registered,
        refused=refused,
        uploaded_at=row.uploaded_at,
        finished_at=row.finished_at,
    )


@router.get(
    "/roster/imports/{import_id}/rows",
    responses=refusals(403, 404),
    response_model=list[ImportRow],
)
async def roster_import_rows(
    import_id: str,
    context: Context,
    _: Operator,
    status: Literal["pending", "registered", "refused"] | None = None,
    after_line: Annotated[int, Query(ge=0, description="page on: the last line you have")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[ImportRow]:
    """Each row's result, in file order: `?status=refused` lists what was refused and why."""
    async with context.reader.connect() as conn:
        if await store.get_roster_import(conn, import_id=import_id) is None:
            raise NotFound("unknown_import", f"no roster upload {import_id}")
        rows = await store.list_import_rows(
            conn, import_id=import_id, status=status, after_line=after_line, limit=limit
        )
    return [
        ImportRow(
            line=row.line,
            credit_code=row.credit_code,
            status=row.status,
            code=row.code,
            message=row.message,
            event_id=row.event_id,
        )
        for row in rows
    ]
