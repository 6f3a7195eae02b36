"""Kafka security: how every client of a service authenticates (from `Settings`), and the ACLs
that give each service principal what it needs and no more (from the topic catalogue).

One principal per service, `User:<service>`; `User:admin` provisions topics and ACLs. A topic is
written only by its `owner` in `contracts/topics.yaml`, and the broker enforces it.
"""

from __future__ import annotations

import shlex
from typing import Any, get_args

from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from carbon_contracts.catalogue import EXTERNAL_SYSTEMS, Catalogue, ServiceName
from carbon_platform.settings import Settings

ADMIN_PRINCIPAL = "admin"

# The order kafka-acls.sh lines list their operations in.
_OPERATIONS = ("Read", "Write", "Create", "Describe")


def _credentials(settings: Settings) -> tuple[str, str]:
    username, password = settings.kafka_sasl_username, settings.kafka_sasl_password
    if not username or password is None:  # Settings refuses this; a model_copy could not
        raise ValueError(
            f"CARBON_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "CARBON_KAFKA_SASL_USERNAME and CARBON_KAFKA_SASL_PASSWORD"
        )
    return username, password.get_secret_value()


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every aiokafka client: AIOKafkaProducer, AIOKafkaConsumer and
    AIOKafkaAdminClient. aiokafka takes the SCRAM credentials as `sasl_plain_*` too."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol == "PLAINTEXT":
        return options
    username, password = _credentials(settings)
    options.update(
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_plain_username=username,
        sasl_plain_password=password,
    )
    if settings.kafka_security_protocol == "SASL_SSL":
        # The system's CA certificates, hostname checked.
        options["ssl_context"] = create_ssl_context()
    return options


def command_client_options() -> dict[str, Any]:
    """`client_options` for a command-line client (`carbon topics`, `carbon external`): it
    authenticates as CARBON_KAFKA_* say, like the services."""
    # Settings insists on a JWT secret, which a Kafka client never uses: give it a placeholder.
    return client_options(Settings(jwt_secret=SecretStr("unused-by-kafka-clients-" + "-" * 8)))


def faust_credentials(settings: Settings) -> Any:
    """`broker_credentials` for `faust.App`: None for PLAINTEXT, else `faust.SASLCredentials`
    (SASL_SSL when it carries an SSL context, SASL_PLAINTEXT otherwise)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    from faust import SASLCredentials  # Faust is heavy; `carbon acls` does not need it

    username, password = _credentials(settings)
    return SASLCredentials(
        username=username,
        password=password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=create_ssl_context()
        if settings.kafka_security_protocol == "SASL_SSL"
        else None,
    )


def service_principals() -> tuple[str, ...]:
    """The service principals: one per service of the catalogue's `ServiceName`."""
    return get_args(ServiceName)


def group_id(group_prefix: str, service: str) -> str:
    """A service's consumer group, which is also its Faust app id."""
    return f"{group_prefix}-{service}"


def _grant(principal: str, operations: set[str], resources: list[tuple[str, str]]) -> str:
    ops = " ".join(f"--operation {op}" for op in _OPERATIONS if op in operations)
    names = " ".join(
        f"--{kind} {shlex.quote(name)}" if name else f"--{kind}" for kind, name in resources
    )
    return (
        'kafka-acls.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --add '
        f"--allow-principal User:{principal} {ops} {names}"
    )


def acl_commands(
    catalogue: Catalogue, group_prefix: str, *, admin: str = ADMIN_PRINCIPAL
) -> list[str]:
    """The kafka-acls.sh lines (allow only, literal resource names) of the platform: one line
    per grant, that is a principal, its operations and the resources they apply to.

    Each service principal `User:<service>` gets:
    - Read and Describe on every domain topic and on its own dead-letter topic, never on
      another service's;
    - Write on the topics it owns (its `<service>.dlq` included), and on no other topic; and
      Create on them, for the relay to recreate one the broker lost (`ensure_topics`);
    - (Inbound topics are domain topics: every service may read them.)
    - Read and Describe on its consumer group `<group_prefix>-<service>`, and Describe on every
      other service's group, to measure every group's lag (carbon_platform.lag): a stopped
      service's lag is reported by the others;
    - Create, Read and Describe on `<group_prefix>-<service>-__assignor-__leader`, the topic
      Faust's leader assignor creates for itself at start.
    Each external system `User:<system>` (the exchange, the carbon inclusion platform, the CCER
    registry) gets Write and Describe on the inbound topics it owns, and nothing else.
    Nothing on the cluster: producers run with idempotence off and without transactions, so
    neither IdempotentWrite nor a transactional id is needed. Only `admin` may create any
    topic (Create on the cluster, for `carbon topics --create`, and Describe on the catalogue's
    topics to see which exist); in docker-compose.yml it is also the super user.
    """
    lines: list[str] = []
    for service in service_principals():
        readable = [
            ("topic", topic.name)
            for topic in catalogue.topics
            if not topic.is_dead_letter or topic.owner == service
        ]
        owned = [("topic", topic.name) for topic in catalogue.topics if topic.owner == service]
        group = group_id(group_prefix, service)
        lines.append(_grant(service, {"Read", "Describe"}, readable))
        if owned:
            lines.append(_grant(service, {"Write", "Create"}, owned))
        lines.append(_grant(service, {"Read", "Describe"}, [("group", group)]))
        others = [
            ("group", group_id(group_prefix, other))
            for other in service_principals()
            if other != service
        ]
        lines.append(_grant(service, {"Describe"}, others))
        leader = f"{group}-__assignor-__leader"
        lines.append(_grant(service, {"Create", "Read", "Describe"}, [("topic", leader)]))
    for system in EXTERNAL_SYSTEMS:  # an external system writes its inbound topics, nothing else
        inbound = [("topic", topic.name) for topic in catalogue.topics if topic.owner == system]
        if inbound:
            lines.append(_grant(system, {"Write", "Describe"}, inbound))
    lines.append(_grant(admin, {"Create"}, [("cluster", "")]))  # --cluster takes no name
    lines.append(_grant(admin, {"Describe"}, [("topic", t.name) for t in catalogue.topics]))
    return lines


def acl_script(catalogue: Catalogue, group_prefix: str, *, admin: str = ADMIN_PRINCIPAL) -> str:
    """`acl_commands` as a POSIX shell script, what `carbon acls` prints."""
    header = f"""\
#!/bin/sh
# Kafka ACLs of the Carbon ETS platform, generated by `carbon acls` from contracts/topics.yaml
# (consumer group prefix {shlex.quote(group_prefix)}, admin principal User:{admin}). Do not edit:
#   .venv/bin/carbon acls > deploy/kafka/acls.sh
# tests/unit/test_deploy.py fails when this file and the catalogue disagree.
#
# BOOTSTRAP: a bootstrap server. CONFIG: a --command-config file of a principal allowed to alter
# ACLs. kafka-acls.sh (Kafka's bin/) on PATH. Adding an ACL that exists changes nothing, so this
# may run again; ACLs it no longer lists are not removed.
set -eu
: "${{BOOTSTRAP:?set BOOTSTRAP to a bootstrap server}}"
: "${{CONFIG:?set CONFIG to the client properties of the admin principal}}"
"""
    return header + "".join(
        f"{line}\n" for line in acl_commands(catalogue, group_prefix, admin=admin)
    )
