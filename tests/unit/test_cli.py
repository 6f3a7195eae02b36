"""The `carbon` command line: tokens, the topic listing, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from carbon_contracts.catalogue import catalogue
from carbon_platform.auth import decode_token
from carbon_platform.cli import app
from carbon_platform.settings import Settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def dev_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CARBON_JWT_SECRET", raising=False)
    monkeypatch.setenv("CARBON_VAR_DIR", str(tmp_path))


def test_a_token_is_signed_with_the_dev_secret_kept_under_var(tmp_path: Path) -> None:
    result = runner.invoke(app, ["token", "--role", "verifier", "--agency", "sh-verify-01"])
    assert result.exit_code == 0, result.output
    secret = (tmp_path / "dev-jwt-secret").read_text()
    principal = decode_token(Settings(jwt_secret=SecretStr(secret)), result.output.strip())
    assert (principal.role, principal.agency) == ("verifier", "sh-verify-01")
    again = runner.invoke(app, ["token", "--role", "regulator"])
    assert (tmp_path / "dev-jwt-secret").read_text() == secret  # the same secret next time
    assert decode_token(Settings(jwt_secret=SecretStr(secret)), again.output.strip()).role == (
        "regulator"
    )


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["token", "--role", "admin"], "role must be one of"),
        (["token", "--role", "entity"], "needs --credit-code"),
        (["token", "--role", "district"], "needs --district"),
    ],
)
def test_a_bad_token_request_is_refused_with_a_reason(arguments: list[str], reason: str) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    assert reason in result.output


def test_a_district_token_names_a_district_of_the_policy(tmp_path: Path) -> None:
    result = runner.invoke(app, ["token", "--role", "district", "--district", "lingang"])
    assert result.exit_code == 0, result.output
    secret = (tmp_path / "dev-jwt-secret").read_text()
    principal = decode_token(Settings(jwt_secret=SecretStr(secret)), result.output.strip())
    assert (principal.role, principal.district) == ("district", "lingang")


def test_a_token_for_an_unknown_district_is_refused() -> None:
    result = runner.invoke(app, ["token", "--role", "district", "--district", "nanhui"])
    assert result.exit_code == 2
    output = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert "Invalid value for --district: unknown district 'nanhui'" in output
    assert "policy shanghai-2024" in output
    assert "chemical-park, lingang, ftz-bonded" in output
    assert "eyJ" not in result.output  # no token printed


def test_topics_lists_the_whole_catalogue() -> None:
    result = runner.invoke(app, ["topics"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.splitlines()[1:]}
    assert listed == {topic.name for topic in catalogue().topics}


def test_dlq_commands_refuse_an_unknown_service() -> None:
    result = runner.invoke(app, ["dlq", "list", "billing"])
    assert result.exit_code == 2
    assert "service must be one of" in result.output
