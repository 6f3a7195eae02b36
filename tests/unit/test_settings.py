"""Service configuration from CARBON_* environment variables: bad configuration fails at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from carbon_contracts.policy import default_policy_path
from carbon_platform.settings import Settings

SECRET = "s" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets are seen, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.upper().startswith("CARBON_"):
            monkeypatch.delenv(name)


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_JWT_SECRET", SECRET)


def failing_fields(error: ValidationError) -> set[str]:
    return {str(e["loc"][0]) for e in error.errors()}


def test_a_missing_jwt_secret_fails_fast() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert failing_fields(caught.value) == {"jwt_secret"}


def test_a_short_jwt_secret_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_JWT_SECRET", "s" * 31)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert failing_fields(caught.value) == {"jwt_secret"}


def test_a_32_character_secret_is_read_from_the_environment_and_kept_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARBON_JWT_SECRET", SECRET)
    settings = Settings()
    assert settings.jwt_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


@pytest.mark.parametrize("bootstrap", ["localhost", "localhost:", ":9092", "kafka:port", "a:1,b"])
@pytest.mark.usefixtures("secret")
def test_a_bootstrap_server_without_host_and_port_fails(
    monkeypatch: pytest.MonkeyPatch, bootstrap: str
) -> None:
    monkeypatch.setenv("CARBON_KAFKA_BOOTSTRAP", bootstrap)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert failing_fields(caught.value) == {"kafka_bootstrap"}
    assert "host:port" in str(caught.value)


@pytest.mark.parametrize("bootstrap", ["a:1,b:2", "kafka:9092", "127.0.0.1:9092", "a:1, b:2"])
@pytest.mark.usefixtures("secret")
def test_host_port_bootstrap_servers_are_accepted(
    monkeypatch: pytest.MonkeyPatch, bootstrap: str
) -> None:
    monkeypatch.setenv("CARBON_KAFKA_BOOTSTRAP", bootstrap)
    assert Settings().kafka_bootstrap == bootstrap


@pytest.mark.usefixtures("secret")
def test_the_default_bootstrap_is_the_loopback_broker() -> None:
    assert Settings().kafka_bootstrap == "127.0.0.1:9092"


@pytest.mark.usefixtures("secret")
def test_the_default_database_is_sqlite_under_var_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var" / "nested"
    monkeypatch.setenv("CARBON_SERVICE", "registry")
    monkeypatch.setenv("CARBON_VAR_DIR", str(var_dir))
    settings = Settings()
    assert settings.database_url is None
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{var_dir / 'registry.db'}"
    assert var_dir.is_dir()


@pytest.mark.usefixtures("secret")
def test_the_schema_defaults_to_the_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_SERVICE", "verification")
    assert Settings().resolved_schema() == "verification"


@pytest.mark.usefixtures("secret")
def test_an_explicit_database_url_and_schema_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "postgresql+asyncpg://carbon:carbon@db:5432/carbon"
    monkeypatch.setenv("CARBON_SERVICE", "registry")
    monkeypatch.setenv("CARBON_VAR_DIR", str(tmp_path / "unused"))
    monkeypatch.setenv("CARBON_DATABASE_URL", url)
    monkeypatch.setenv("CARBON_DATABASE_SCHEMA", "carbon_registry")
    settings = Settings()
    assert settings.resolved_database_url() == url
    assert settings.resolved_schema() == "carbon_registry"
    assert not (tmp_path / "unused").exists()


@pytest.mark.usefixtures("secret")
def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "localhost")
    monkeypatch.setenv("SERVICE", "registry")
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.service == ""


@pytest.mark.usefixtures("secret")
def test_numbers_are_parsed_and_range_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_HTTP_PORT", "8003")
    assert Settings().http_port == 8003
    monkeypatch.setenv("CARBON_HTTP_PORT", "70000")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert failing_fields(caught.value) == {"http_port"}


@pytest.mark.usefixtures("secret")
def test_an_unknown_log_format_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert failing_fields(caught.value) == {"log_format"}


@pytest.mark.usefixtures("secret")
def test_the_default_policy_is_shanghai_2024() -> None:
    settings = Settings()
    assert settings.policy_file == default_policy_path()
    assert settings.policy_file.name == "shanghai-2024.yaml"
    assert settings.policy_file.is_file()
