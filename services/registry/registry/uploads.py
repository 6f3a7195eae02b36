"""The Bureau's CSV uploads (the roster, opening balances): the body as UTF-8 text/csv, a sound
header, and each data row with the line of the file it starts on. A file that is not sound is
refused whole (415, or 422 `invalid_csv`); what a row says is its command's business."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from fastapi import HTTPException, Request

from carbon_contracts.errors import Invalid

Row = tuple[int, str, dict[str, str]]
"""(line, credit code as written, fields by header name). A row with more values than columns
has them joined under `_extra`; one with fewer names the columns it lacks under `_missing`."""


async def csv_body(request: Request, what: str) -> str:
    """The request body of an upload of `what` (e.g. "the roster")."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/csv":
        raise HTTPException(415, f"send {what} as text/csv, not {media_type or 'nothing'}")
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError as error:
        raise Invalid("invalid_csv", f"{what} is not UTF-8: {error}") from error


def csv_rows(
    text: str,
    *,
    required: Sequence[str],
    optional: Sequence[str],
    max_rows: int,
    rule: str,
    one_of: Sequence[str] = (),
) -> list[Row]:
    """Each data row of `text`, after a header that names every `required` column, only those
    and `optional` ones, each once, and at least one of `one_of` if given (`rule` says so to the
    Bureau); at least one row and at most `max_rows`."""
    try:
        rows = _rows(text, required, optional, max_rows, rule, one_of)
    except csv.Error as error:
        raise Invalid("invalid_csv", f"not a readable CSV file: {error}") from None
    if not rows:
        raise Invalid("invalid_csv", "the file has a header but no rows")
    return rows


def _rows(
    text: str,
    required: Sequence[str],
    optional: Sequence[str],
    max_rows: int,
    rule: str,
    one_of: Sequence[str],
) -> list[Row]:
    # strict: a stray quote is an error of the file, not a field that swallows the rows after it
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), restkey="_extra", strict=True)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in required if name not in header]
    unknown = [name for name in header if name not in (*required, *optional)]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if missing or unknown or repeated or (one_of and not set(one_of) & set(header)):
        raise Invalid(
            "invalid_csv",
            f"{rule}; missing: {', '.join(missing) or '-'}; unknown: "
            f"{', '.join(unknown) or '-'}; repeated: {', '.join(repeated) or '-'}",
        )
    reader.fieldnames = header
    rows: list[Row] = []
    first_line = reader.line_num + 1  # a quoted field may span lines: a row is where it starts
    for fields in reader:
        if len(rows) >= max_rows:
            raise Invalid("invalid_csv", f"more than {max_rows} rows; split the file")
        values = {k: v.strip() for k, v in fields.items() if isinstance(v, str)}
        if "_extra" in fields:
            values["_extra"] = ",".join(fields["_extra"])
        short = [name for name, value in fields.items() if value is None]
        if short:
            values["_missing"] = ", ".join(short)
        rows.append((first_line, values.get("credit_code", ""), values))
        first_line = reader.line_num + 1
    return rows
