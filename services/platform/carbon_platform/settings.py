"""Service configuration from `CARBON_*` environment variables; bad config fails at start."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carbon_contracts.policy import default_policy_path

REPO_ROOT = Path(__file__).resolve().parents[3]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARBON_", extra="ignore")

    service: str = ""
    kafka_bootstrap: str = "127.0.0.1:9092"
    # How every Kafka client (the worker, the relay, admin and DLQ readers) authenticates; see
    # carbon_platform.kafka. PLAINTEXT suits the embedded broker only: a SASL protocol needs a
    # username and password (one principal per service, deploy/README.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
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
    # Where spans go: nowhere (trace context still travels on the records), one JSON line per
    # span on stdout, or OTLP over HTTP to the collector in OTEL_EXPORTER_OTLP_ENDPOINT.
    tracing_exporter: Literal["none", "console", "otlp"] = "none"
    # Consumer group tuning: a group join waits up to the rebalance timeout for members; Tansu
    # holds a new group's first join for half the session timeout, and a member that died keeps
    # its partitions until its session times out, so the session is short (heartbeats run in
    # the consumer's own thread).
    kafka_rebalance_timeout_s: float = Field(default=3.0, gt=0)
    kafka_session_timeout_s: float = Field(default=6.0, gt=0)
    # Longest a consumer's fetch may wait at the broker for new records (latency bound).
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=1, le=5000)
    # Records a poll hands the worker, taken up in one database transaction.
    kafka_max_poll_records: int = Field(default=500, ge=1)
    # How long a worker waits for more records to join a batch before taking it up.
    consume_linger_ms: float = Field(default=3.0, ge=0, le=1000)
    # Faust consumer group id prefix; tests isolate groups with it.
    group_prefix: str = "carbon"
    # Readiness turns false when the oldest unpublished outbox row is older than this.
    outbox_stall_s: float = Field(default=60.0, gt=0)
    bug_retry_attempts: int = Field(default=3, ge=1)
    transient_backoff_max_s: float = Field(default=5.0, gt=0)
    # This process among the service's instances, as the holder of the outbox lease: a
    # restarted instance with the same id takes its lease back at once. Two running instances
    # must never share one (default: host name and process id).
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    # One instance's relay publishes the outbox; another takes over once this lease lapses.
    outbox_lease_s: float = Field(default=10.0, ge=1)
    # The broker is asked this often whether it is there; readiness turns within two rounds.
    broker_probe_interval_s: float = Field(default=3.0, gt=0)
    broker_probe_timeout_s: float = Field(default=3.0, gt=0)
    # Request bodies above this get 413 (a route may allow more, e.g. a bulk import).
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    @property
    def instance(self) -> str:
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bootstrap server {server!r} must be host:port")
        return value

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> Settings:
        """A SASL protocol without a principal would fail at the broker; fail at start instead."""
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = []
            if not self.kafka_sasl_username:
                missing.append("CARBON_KAFKA_SASL_USERNAME")
            if not self.kafka_sasl_password or not self.kafka_sasl_password.get_secret_value():
                missing.append("CARBON_KAFKA_SASL_PASSWORD")
            if missing:
                raise ValueError(
                    f"CARBON_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    f"{' and '.join(missing)}"
                )
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{self.var_dir / f'{self.service}.db'}"

    def resolved_schema(self) -> str:
        return self.database_schema or self.service
