"""Service configuration from `CARBON_*` environment variables; bad config fails at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carbon_contracts.policy import default_policy_path

REPO_ROOT = Path(__file__).resolve().parents[3]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARBON_", extra="ignore")

    service: str = ""
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Unset: an SQLite file per service under var_dir. PostgreSQL: postgresql+asyncpg://...
    database_url: str | None = None
    # PostgreSQL schema owned by the service; defaults to the service name.
    database_schema: str | None = None
    var_dir: Path = REPO_ROOT / "var"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    jwt_secret: SecretStr = Field(min_length=32)
    jwt_issuer: str = "carbon-ets"
    jwt_audience: str = "carbon-ets"
    policy_file: Path = Field(default_factory=default_policy_path)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Consumer group tuning: a group join waits up to the rebalance timeout for members.
    kafka_rebalance_timeout_s: float = Field(default=3.0, gt=0)
    kafka_session_timeout_s: float = Field(default=10.0, gt=0)
    # Longest a consumer's fetch may wait at the broker for new records (latency bound).
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=1, le=5000)
    kafka_max_poll_records: int = Field(default=50, ge=1)
    # Faust consumer group id prefix; tests isolate groups with it.
    group_prefix: str = "carbon"
    # Readiness turns false when the oldest unpublished outbox row is older than this.
    outbox_stall_s: float = Field(default=60.0, gt=0)
    bug_retry_attempts: int = Field(default=3, ge=1)
    transient_backoff_max_s: float = Field(default=5.0, gt=0)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bootstrap server {server!r} must be host:port")
        return value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{self.var_dir / f'{self.service}.db'}"

    def resolved_schema(self) -> str:
        return self.database_schema or self.service
