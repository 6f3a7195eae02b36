"""Kafka security: the CARBON_KAFKA_* settings, the options every Kafka client gets from them,
and the ACLs `carbon acls` generates from the topic catalogue."""

from __future__ import annotations

import os
import shlex
import ssl
from collections import defaultdict
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from carbon_contracts.catalogue import EXTERNAL_SYSTEMS, catalogue
from carbon_platform.cli import app
from carbon_platform.kafka import (
    acl_commands,
    acl_script,
    client_options,
    faust_credentials,
    service_principals,
)
from carbon_platform.settings import Settings

SECRET = "s" * 32
SERVICES = ("reporting", "verification", "registry", "notifier")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets are seen, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.upper().startswith("CARBON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CARBON_JWT_SECRET", SECRET)


def sasl_env(monkeypatch: pytest.MonkeyPatch, protocol: str, mechanism: str | None = None) -> None:
    monkeypatch.setenv("CARBON_KAFKA_SECURITY_PROTOCOL", protocol)
    if mechanism:
        monkeypatch.setenv("CARBON_KAFKA_SASL_MECHANISM", mechanism)
    monkeypatch.setenv("CARBON_KAFKA_SASL_USERNAME", "registry")
    monkeypatch.setenv("CARBON_KAFKA_SASL_PASSWORD", "registry-secret")


# --- settings ---------------------------------------------------------------------------------


def test_the_default_is_plaintext_without_credentials() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_username is None
    assert settings.kafka_sasl_password is None


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    ("username", "password", "missing"),
    [
        (None, None, ["CARBON_KAFKA_SASL_USERNAME", "CARBON_KAFKA_SASL_PASSWORD"]),
        ("registry", None, ["CARBON_KAFKA_SASL_PASSWORD"]),
        (None, "registry-secret", ["CARBON_KAFKA_SASL_USERNAME"]),
        ("", "", ["CARBON_KAFKA_SASL_USERNAME", "CARBON_KAFKA_SASL_PASSWORD"]),
    ],
)
def test_a_sasl_protocol_needs_a_username_and_a_password(
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    username: str | None,
    password: str | None,
    missing: list[str],
) -> None:
    monkeypatch.setenv("CARBON_KAFKA_SECURITY_PROTOCOL", protocol)
    if username is not None:
        monkeypatch.setenv("CARBON_KAFKA_SASL_USERNAME", username)
    if password is not None:
        monkeypatch.setenv("CARBON_KAFKA_SASL_PASSWORD", password)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert f"CARBON_KAFKA_SECURITY_PROTOCOL={protocol}" in message
    for name in missing:
        assert name in message
    for name in {"CARBON_KAFKA_SASL_USERNAME", "CARBON_KAFKA_SASL_PASSWORD"} - set(missing):
        assert name not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CARBON_KAFKA_SECURITY_PROTOCOL", "SSL"),
        ("CARBON_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
        ("CARBON_KAFKA_SASL_MECHANISM", "GSSAPI"),
        ("CARBON_KAFKA_SASL_MECHANISM", "SCRAM-SHA-1"),
    ],
)
def test_unknown_protocols_and_mechanisms_fail(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    sasl_env(monkeypatch, "SASL_PLAINTEXT")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert {str(e["loc"][0]) for e in caught.value.errors()} == {variable.lower()[7:]}


def test_the_sasl_password_is_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch, "SASL_PLAINTEXT")
    settings = Settings()
    assert settings.kafka_sasl_username == "registry"
    assert isinstance(settings.kafka_sasl_password, SecretStr)
    assert settings.kafka_sasl_password.get_secret_value() == "registry-secret"
    assert "registry-secret" not in repr(settings)
    assert "registry-secret" not in str(settings)


def test_credentials_without_sasl_are_allowed_and_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch, "PLAINTEXT")
    settings = Settings()
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


# --- client_options ---------------------------------------------------------------------------


def test_plaintext_client_options() -> None:
    assert client_options(Settings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_client_options(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    sasl_env(monkeypatch, "SASL_PLAINTEXT", mechanism)
    assert client_options(Settings()) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "registry",
        "sasl_plain_password": "registry-secret",
    }


def test_sasl_ssl_client_options_verify_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch, "SASL_SSL")
    options = client_options(Settings())
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "registry",
        "sasl_plain_password": "registry-secret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_client_options_refuse_a_copy_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch, "SASL_PLAINTEXT")
    settings = Settings().model_copy(update={"kafka_sasl_password": None})
    with pytest.raises(ValueError, match="CARBON_KAFKA_SASL_PASSWORD"):
        client_options(settings)
    with pytest.raises(ValueError, match="CARBON_KAFKA_SASL_PASSWORD"):
        faust_credentials(settings)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"])
async def test_every_aiokafka_client_accepts_the_options(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """The keyword names are aiokafka's: each client is built (not started) with them."""
    sasl_env(monkeypatch, protocol)
    options = client_options(Settings())
    clients: list[Any] = [
        AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", **options),
        AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", **options),
        AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:9", **options),
    ]
    for client in clients:
        inner = client.client if isinstance(client, AIOKafkaProducer) else client._client
        assert inner._security_protocol == protocol
        if protocol != "PLAINTEXT":
            assert inner._sasl_mechanism == "SCRAM-SHA-512"
            assert inner._sasl_plain_username == "registry"
            assert inner._sasl_plain_password == "registry-secret"
    await clients[0].stop()
    await clients[1].stop()


# --- faust_credentials ------------------------------------------------------------------------


def test_plaintext_has_no_faust_credentials() -> None:
    assert faust_credentials(Settings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_faust_credentials(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    sasl_env(monkeypatch, "SASL_PLAINTEXT", mechanism)
    credentials = faust_credentials(Settings())
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.mechanism is SASLMechanism(mechanism)
    assert (credentials.username, credentials.password) == ("registry", "registry-secret")
    assert credentials.ssl_context is None
    assert "registry-secret" not in repr(credentials)


def test_sasl_ssl_faust_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_env(monkeypatch, "SASL_SSL")
    credentials = faust_credentials(Settings())
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_hands_aiokafka_the_same_options(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """Faust's driver turns the credentials into aiokafka keywords: the same as ours."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    sasl_env(monkeypatch, protocol)
    settings = Settings()
    ours = client_options(settings)
    theirs = dict(credentials_to_aiokafka_auth(faust_credentials(settings)))
    assert isinstance(
        theirs.pop("ssl_context"), ssl.SSLContext if protocol == "SASL_SSL" else type(None)
    )
    ours.pop("ssl_context", None)
    assert theirs == ours


# --- ACLs -------------------------------------------------------------------------------------


def parse_acls(lines: list[str]) -> dict[tuple[str, str, str], set[str]]:
    """(principal, resource type, name) -> allowed operations, from kafka-acls.sh lines."""
    grants: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "kafka-acls.sh"
        assert words[1:6] == [
            "--bootstrap-server",
            "$BOOTSTRAP",
            "--command-config",
            "$CONFIG",
            "--add",
        ]
        principals, operations, resources = [], [], []
        rest = iter(words[6:])
        for flag in rest:
            if flag == "--allow-principal":
                principals.append(next(rest))
            elif flag == "--operation":
                operations.append(next(rest))
            elif flag in {"--topic", "--group"}:
                resources.append((flag[2:], next(rest)))
            elif flag == "--cluster":
                resources.append(("cluster", "kafka-cluster"))
            else:
                raise AssertionError(f"unexpected {flag!r} in {line}")
        assert len(principals) == 1 and operations and resources, line
        for kind, name in resources:
            grants[(principals[0], kind, name)] |= set(operations)
    return dict(grants)


@pytest.fixture(scope="module")
def grants() -> dict[tuple[str, str, str], set[str]]:
    return parse_acls(acl_commands(catalogue(), "carbon"))


def test_the_principals_are_the_catalogue_services() -> None:
    assert service_principals() == SERVICES
    assert {topic.owner for topic in catalogue().topics} <= set(SERVICES) | set(EXTERNAL_SYSTEMS)


@pytest.mark.parametrize("system", EXTERNAL_SYSTEMS)
def test_an_external_system_may_only_write_its_inbound_topics(
    grants: dict[tuple[str, str, str], set[str]], system: str
) -> None:
    mine = {key: ops for key, ops in grants.items() if key[0] == f"User:{system}"}
    inbound = {t.name for t in catalogue().topics if t.owner == system}
    assert inbound, system
    assert mine == {(f"User:{system}", "topic", name): {"Write", "Describe"} for name in inbound}


def test_each_topic_is_writable_by_its_owner_only(
    grants: dict[tuple[str, str, str], set[str]],
) -> None:
    for topic in catalogue().topics:
        writers = {
            p for (p, kind, name), ops in grants.items() if name == topic.name and "Write" in ops
        }
        assert writers == {f"User:{topic.owner}"}, topic.name
    # And nothing else is writable by anyone.
    written = {name for (_, _, name), ops in grants.items() if "Write" in ops}
    assert written == {topic.name for topic in catalogue().topics}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_reads_every_domain_topic_and_its_own_dead_letters(
    grants: dict[tuple[str, str, str], set[str]], service: str
) -> None:
    principal = f"User:{service}"
    readable = {
        name
        for (p, kind, name), ops in grants.items()
        if p == principal and kind == "topic" and {"Read", "Describe"} <= ops
    }
    leader = f"carbon-{service}-__assignor-__leader"
    domain = {topic.name for topic in catalogue().domain_topics()}
    assert readable == domain | {f"{service}.dlq", leader}
    assert grants[(principal, "group", f"carbon-{service}")] == {"Read", "Describe"}
    # Faust's leader assignor creates its own topic at start.
    assert grants[(principal, "topic", leader)] == {"Create", "Read", "Describe"}
    # Its own topics too, for the relay to recreate one the broker lost; no other topic.
    creatable = {name for (p, _, name), ops in grants.items() if p == principal and "Create" in ops}
    assert creatable == {leader} | {t.name for t in catalogue().topics if t.owner == service}
    assert not [key for key in grants if key[0] == principal and key[1] == "cluster"]


def test_only_admin_may_create_on_the_cluster_and_nobody_gets_more_than_it_needs(
    grants: dict[tuple[str, str, str], set[str]],
) -> None:
    assert grants[("User:admin", "cluster", "kafka-cluster")] == {"Create"}
    for topic in catalogue().topics:
        assert grants[("User:admin", "topic", topic.name)] == {"Describe"}
    used = set().union(*grants.values())
    assert used <= {"Read", "Write", "Create", "Describe"}  # no IdempotentWrite, no All
    principals = {principal for principal, _, _ in grants}
    assert principals == {f"User:{s}" for s in (*SERVICES, *EXTERNAL_SYSTEMS)} | {"User:admin"}


def test_the_group_prefix_names_groups_and_leader_topics() -> None:
    grants = parse_acls(acl_commands(catalogue(), "test-1"))
    assert ("User:registry", "group", "test-1-registry") in grants
    assert ("User:registry", "topic", "test-1-registry-__assignor-__leader") in grants
    assert not [key for key in grants if key[2].startswith("carbon-")]


def test_the_script_is_posix_shell_that_requires_bootstrap_and_config() -> None:
    script = acl_script(catalogue(), "carbon")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "set -eu" in lines
    assert ': "${BOOTSTRAP:?' in script and ': "${CONFIG:?' in script
    commands = [line for line in lines if line.startswith("kafka-acls.sh")]
    assert commands == acl_commands(catalogue(), "carbon")
    assert script.endswith("\n")


def test_carbon_acls_prints_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["acls"])
    assert result.exit_code == 0, result.output
    assert result.output == acl_script(catalogue(), "carbon")
    monkeypatch.setenv("CARBON_GROUP_PREFIX", "staging")
    result = CliRunner().invoke(app, ["acls", "--admin", "ops"])
    assert result.output == acl_script(catalogue(), "staging", admin="ops")
    assert "--group staging-registry" in result.output
    assert "User:ops --operation Create --cluster" in result.output
