"""Static checks of the container deployment: Dockerfile, docker-compose.yml and deploy/.

Nothing here needs Docker. The files are parsed and cross-checked against the facts the
services are built to: their ports, their `python -m <service>` commands, their configuration
variables, the names of the metrics they export and the Kafka ACLs of the topic catalogue.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import REGISTRY

from carbon_contracts.catalogue import EXTERNAL_SYSTEMS, catalogue
from carbon_platform import metrics as _metrics  # registers every carbon_* metric
from carbon_platform.kafka import acl_script
from carbon_platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "carbon-overview.json"
ALERTMANAGER_FILE = DEPLOY / "alertmanager" / "alertmanager.yml"
RUNBOOKS = DEPLOY / "runbooks"
RUNBOOK_SECTIONS = ("## What it means", "## How to confirm", "## What to do")

SERVICE_PORTS = {"reporting": 8001, "verification": 8002, "registry": 8003, "notifier": 8004}
STACK = {"kafka", "postgres", "topics", "acls", *SERVICE_PORTS, "prometheus", "grafana"}
STACK |= {"alertmanager", "alertmanager-token"}
BOOTSTRAP = "kafka:9092"
JWT_SECRET = "${CARBON_JWT_SECRET:?set CARBON_JWT_SECRET}"
KAFKA_DIR = DEPLOY / "kafka"
KAFKA_IMAGE = "apache/kafka:3.9.0"
ADMIN = "admin"
SASL_PROTOCOLS = {"SASL_PLAINTEXT", "SASL_SSL"}
# The apache/kafka image turns these KAFKA_* variables into no broker property
# (ExcludeServerPropsEnv in core/src/main/scala/kafka/docker/KafkaDockerWrapper.scala, 3.9.0).
KAFKA_NON_PROPERTY_ENV = {
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
}


def _exported() -> list[str]:
    """The carbon_* metric names as exposed (counters with their _total)."""
    names = []
    for family in REGISTRY.collect():
        if family.name.startswith("carbon_"):
            names.append(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def kafka_password(principal: str) -> str:
    """How compose must reference a Kafka principal's password: a required variable."""
    name = f"CARBON_KAFKA_PASSWORD_{principal.upper().replace('-', '_')}"
    return f"${{{name}:?set {name}}}"


# Everything the services export (carbon_platform.metrics). `up` comes from Prometheus.
assert _metrics.WORKER_READY
METRICS = frozenset(_exported())
HISTOGRAMS = frozenset(
    family.name
    for family in REGISTRY.collect()
    if family.type == "histogram" and family.name in METRICS
)
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])carbon_[a-z_]+")


def metric_names(expr: str) -> set[str]:
    """carbon_* metric names in a PromQL expression, histogram series folded to their family."""
    names = set()
    for name in METRIC_NAME.findall(expr):
        for suffix in ("_bucket", "_sum", "_count"):
            family = name.removesuffix(suffix)
            if family != name and family in HISTOGRAMS:
                name = family
                break
        names.add(name)
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def port_pairs(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs of a compose service's `ports:` (short or long syntax)."""
    pairs = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        *_, published, target = str(entry).split("/")[0].split(":")
        pairs.add((int(published), int(target)))
    return pairs


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host address, host port, container port) of each `ports:` entry; the host port is ""
    where Docker picks one (per replica), the address "" where every interface is bound."""
    published = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            host = (entry.get("host_ip", ""), str(entry.get("published", "")))
            published.append((*host, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 1:
            parts = ["", "", *parts]
        elif len(parts) == 2:
            parts = ["", *parts]
        address, host_port, target = parts
        published.append((address, host_port, int(target)))
    return published


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host source, container target) of a service's bind mounts; named volumes skipped."""
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                yield entry["source"], entry["target"]
            continue
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/")):
            yield source, target


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository file that a path inside the container comes from, via bind mounts."""
    wanted = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if wanted == PurePosixPath(target) or PurePosixPath(target) in wanted.parents:
            return ROOT / source / wanted.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def dependency_conditions(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]


# --- the metric name parser itself ------------------------------------------------------------


def test_metric_name_parser_folds_histogram_series_only() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(carbon_event_handle_seconds_bucket[5m])))"
        " / carbon_http_request_duration_seconds_count + carbon_outbox_pending"
        ' + carbon_events_consumed_total{outcome="processed"}'
    )
    assert metric_names(expr) == {
        "carbon_event_handle_seconds",
        "carbon_http_request_duration_seconds",
        "carbon_outbox_pending",
        "carbon_events_consumed_total",
    }
    assert metric_names("carbon_outbox_pending_count + carbon_outbox_pendng") == {
        "carbon_outbox_pending_count",
        "carbon_outbox_pendng",
    }


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_defines_the_whole_stack(services: dict[str, Any]) -> None:
    assert set(services) >= STACK


@pytest.mark.parametrize(("name", "port"), sorted(SERVICE_PORTS.items()))
def test_app_service_runs_its_module_on_its_port(
    services: dict[str, Any], name: str, port: int
) -> None:
    service = services[name]
    assert service["command"] == ["python", "-m", name]
    assert [target for *_, target in published_ports(service)] == [port]
    env = service["environment"]
    assert env["CARBON_HTTP_PORT"] == str(port)
    assert env["CARBON_HTTP_HOST"] == "0.0.0.0"
    assert env["CARBON_KAFKA_BOOTSTRAP"] == BOOTSTRAP
    assert env["CARBON_LOG_FORMAT"] == "json"
    assert env["CARBON_JWT_SECRET"] == JWT_SECRET
    healthcheck = " ".join(service["healthcheck"]["test"])
    assert "urllib" in healthcheck
    assert f"127.0.0.1:{port}/health/ready" in healthcheck


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_app_service_scales_without_fixed_host_ports(services: dict[str, Any], name: str) -> None:
    """`docker compose up --scale <service>=N`: no fixed container name or host port, so each
    replica gets its own; published on loopback only, the host port chosen by Docker."""
    service = services[name]
    assert "container_name" not in service
    # Replicas sharing a host name would share the default CARBON_INSTANCE_ID (host name and
    # pid, the same pid under the same init), and so the outbox lease.
    assert "hostname" not in service
    assert "CARBON_INSTANCE_ID" not in service["environment"]
    for address, host_port, _ in published_ports(service):
        assert host_port == "", f"{name} binds host port {host_port}: one replica at most"
        assert address == "127.0.0.1"


def test_published_ports_parser_reads_every_short_form() -> None:
    service = {"ports": ["8003", "127.0.0.1::8003", "8001:8003", "0.0.0.0:8001:8003/tcp"]}
    assert published_ports(service) == [
        ("", "", 8003),
        ("127.0.0.1", "", 8003),
        ("", "8001", 8003),
        ("0.0.0.0", "8001", 8003),
    ]
    assert published_ports({"ports": [{"target": 8003, "host_ip": "127.0.0.1"}]}) == [
        ("127.0.0.1", "", 8003)
    ]


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_app_service_waits_for_broker_database_and_topics(
    services: dict[str, Any], name: str
) -> None:
    assert dependency_conditions(services[name]) == {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
        "topics": "service_completed_successfully",
        "acls": "service_completed_successfully",
    }


def test_services_and_topics_job_share_the_image_built_from_the_repo(
    services: dict[str, Any],
) -> None:
    for name in ["topics", *SERVICE_PORTS]:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").is_file(), name
    assert len({services[name]["image"] for name in ["topics", *SERVICE_PORTS]}) == 1


def test_topics_job_provisions_the_catalogue_once_kafka_is_healthy(
    services: dict[str, Any],
) -> None:
    topics = services["topics"]
    assert topics["command"] == ["carbon", "topics", "--create", "--bootstrap", BOOTSTRAP]
    assert dependency_conditions(topics) == {"kafka": "service_healthy"}
    assert topics.get("restart", "no") == "no"


def test_services_use_their_database_on_the_postgres_container(services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    pg_env = pg["environment"]
    assert pg_env["POSTGRES_DB"] == pg_env["POSTGRES_USER"] == "carbon"
    for name in SERVICE_PORTS:
        url = urlsplit(services[name]["environment"]["CARBON_DATABASE_URL"])
        assert url.scheme == "postgresql+asyncpg"
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert url.username == pg_env["POSTGRES_USER"]
        assert url.password == pg_env["POSTGRES_PASSWORD"]
        assert url.path == f"/{pg_env['POSTGRES_DB']}"


def test_kafka_is_a_single_kraft_node_without_topic_auto_creation(
    services: dict[str, Any],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.0"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{BOOTSTRAP}" in advertised
    assert "//localhost:29092" in advertised
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert (29092, 29092) in port_pairs(kafka)
    assert kafka["healthcheck"]["test"]
    # A single broker holds one replica of everything, the catalogue's topics included.
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    catalogue = load_yaml(ROOT / "contracts" / "topics.yaml")
    replication = catalogue.get("defaults", {}).get("replication_factor", 1)
    assert replication == 1
    for topic in catalogue["topics"]:
        assert topic.get("replication_factor", replication) == 1, topic["name"]


def test_grafana_allows_anonymous_viewers_on_port_3000(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    assert str(grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert (3000, 3000) in port_pairs(grafana)


def test_bind_mounts_point_at_files_in_the_repo(compose: dict[str, Any]) -> None:
    mounts = [(n, s) for n, svc in compose["services"].items() for s, _ in bind_mounts(svc)]
    assert mounts, "expected the prometheus and grafana config mounts"
    for name, source in mounts:
        assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    named = {
        str(entry).split(":")[0]
        for svc in compose["services"].values()
        for entry in svc.get("volumes", [])
        if isinstance(entry, str) and not entry.startswith((".", "/"))
    }
    assert named <= set(compose.get("volumes") or {})


def test_container_config_paths_resolve_to_repo_files(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert host_path(prometheus, flag.split("=", 1)[1]) == PROMETHEUS_DIR / "prometheus.yml"

    grafana = services["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == DASHBOARD_FILE
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    for provider in load_yaml(provisioning / "dashboards" / "dashboards.yml")["providers"]:
        folder = host_path(grafana, provider["options"]["path"])
        assert folder.is_dir()
        assert list(folder.glob("*.json"))


# --- Kafka authentication and ACLs ------------------------------------------------------------


def kafka_server_properties(env: dict[str, Any]) -> dict[str, str]:
    """The broker properties the apache/kafka image writes from KAFKA_* variables: prefix
    dropped, lower case, `_` to `.`, `__` to `_`, `___` to `-` (KafkaDockerWrapper, 3.9.0)."""
    properties = {}
    for key, value in env.items():
        if key.startswith("KAFKA_") and key not in KAFKA_NON_PROPERTY_ENV:
            name = key.replace("KAFKA_", "").lower().replace("_", ".")
            properties[name.replace("...", "-").replace("..", "_")] = str(value)
    return properties


@pytest.fixture(scope="module")
def kafka_props(services: dict[str, Any]) -> dict[str, str]:
    return kafka_server_properties(services["kafka"]["environment"])


def listener_protocols(props: dict[str, str]) -> dict[str, str]:
    """Listener name -> security protocol, for every listener the broker opens."""
    protocol_map = dict(
        entry.split(":") for entry in props["listener.security.protocol.map"].split(",")
    )
    names = [entry.split("://")[0] for entry in props["listeners"].split(",")]
    return {name: protocol_map.get(name, name) for name in names}


def enabled_mechanisms(props: dict[str, str], listener: str) -> list[str]:
    value = props.get(
        f"listener.name.{listener.lower()}.sasl.enabled.mechanisms",
        props["sasl.enabled.mechanisms"],
    )
    return value.split(",")


def jaas_config(props: dict[str, str], listener: str, mechanism: str) -> str:
    return props[f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"]


def jaas_options(config: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', config))


def parse_acl_script(text: str) -> dict[tuple[str, str, str], set[str]]:
    """(principal, resource type, name) -> allowed operations, from kafka-acls.sh lines."""
    grants: dict[tuple[str, str, str], set[str]] = {}
    for line in text.splitlines():
        if not line.startswith("kafka-acls.sh "):
            continue
        words = shlex.split(line)
        assert "--add" in words and "--deny-principal" not in words, line
        principal = words[words.index("--allow-principal") + 1]
        operations = {words[i + 1] for i, word in enumerate(words) if word == "--operation"}
        resources = [
            (word[2:], words[i + 1])
            for i, word in enumerate(words)
            if word in {"--topic", "--group"}
        ] + [("cluster", "kafka-cluster") for word in words if word == "--cluster"]
        assert words.count("--allow-principal") == 1 and operations and resources, line
        for kind, name in resources:
            grants.setdefault((principal, kind, name), set()).update(operations)
    return grants


def test_kafka_listeners_all_require_sasl(
    services: dict[str, Any], kafka_props: dict[str, str]
) -> None:
    protocols = listener_protocols(kafka_props)
    assert set(protocols) == {"INTERNAL", "HOST", "CONTROLLER"}
    for listener, protocol in protocols.items():
        assert protocol in SASL_PROTOCOLS, f"{listener} is {protocol}"
    advertised = [entry.split("://") for entry in kafka_props["advertised.listeners"].split(",")]
    assert {name for name, _ in advertised} <= set(protocols)
    assert ["INTERNAL", BOOTSTRAP] in advertised
    assert kafka_props["inter.broker.listener.name"] in protocols
    assert kafka_props["controller.listener.names"] == "CONTROLLER"
    # The host listener is reachable from the host's loopback only.
    assert [str(p) for p in services["kafka"]["ports"]] == ["127.0.0.1:29092:29092"]
    # The image's configure script wants a JAAS file in KAFKA_OPTS when an advertised listener
    # is *named* SASL_...; these names avoid that, the JAAS configs are broker properties.
    if re.search(r"SASL_\w*://", kafka_props["advertised.listeners"]):
        assert "java.security.auth.login.config" in services["kafka"]["environment"]["KAFKA_OPTS"]


def test_kafka_has_a_jaas_config_for_every_mechanism_of_every_listener(
    kafka_props: dict[str, str],
) -> None:
    for listener in listener_protocols(kafka_props):
        mechanisms = enabled_mechanisms(kafka_props, listener)
        assert mechanisms and set(mechanisms) <= {"PLAIN", "SCRAM-SHA-512"}, listener
        for mechanism in mechanisms:
            config = jaas_config(kafka_props, listener, mechanism)
            assert config.rstrip().endswith(";"), (listener, mechanism)
            module = config.split()[0]
            if mechanism == "PLAIN":
                assert module == "org.apache.kafka.common.security.plain.PlainLoginModule"
                # admin is the only PLAIN user, and its password is a required variable.
                users = {k: v for k, v in jaas_options(config).items() if k.startswith("user_")}
                assert users == {f"user_{ADMIN}": kafka_password(ADMIN)}, listener
            else:
                assert module == "org.apache.kafka.common.security.scram.ScramLoginModule"
                assert not [k for k in jaas_options(config) if k.startswith("user_")]


def test_kafka_controller_and_inter_broker_log_in_as_admin(kafka_props: dict[str, str]) -> None:
    # SCRAM credentials live in the metadata the controller serves, and the image formats its
    # storage without any: the broker logs in to the controller, and to itself, as admin (PLAIN).
    controller = kafka_props["sasl.mechanism.controller.protocol"]
    assert controller == "PLAIN"
    assert enabled_mechanisms(kafka_props, "CONTROLLER") == [controller]
    inter_broker = kafka_props["sasl.mechanism.inter.broker.protocol"]
    assert inter_broker in enabled_mechanisms(
        kafka_props, kafka_props["inter.broker.listener.name"]
    )
    for listener, mechanism in [
        ("CONTROLLER", controller),
        (kafka_props["inter.broker.listener.name"], inter_broker),
    ]:
        options = jaas_options(jaas_config(kafka_props, listener, mechanism))
        assert (options["username"], options["password"]) == (ADMIN, kafka_password(ADMIN))


def test_kafka_authorizes_every_request_by_acl(kafka_props: dict[str, str]) -> None:
    assert (
        kafka_props["authorizer.class.name"]
        == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert kafka_props["allow.everyone.if.no.acl.found"].lower() == "false"
    assert kafka_props["super.users"] == f"User:{ADMIN}"


def test_kafka_healthcheck_logs_in_as_admin(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    test = " ".join(kafka["healthcheck"]["test"])
    script = re.search(r"sh (\S+/admin-client\.sh) > (\S+)", test)
    assert script, test
    assert host_path(kafka, script.group(1)) == KAFKA_DIR / "admin-client.sh"
    assert f"--bootstrap-server {BOOTSTRAP} --command-config {script.group(2)}" in test
    assert kafka["environment"]["CARBON_KAFKA_PASSWORD_ADMIN"] == kafka_password(ADMIN)
    client = (KAFKA_DIR / "admin-client.sh").read_text()
    assert "security.protocol=SASL_PLAINTEXT" in client
    assert "sasl.mechanism=PLAIN" in client
    assert 'username="admin" password="${CARBON_KAFKA_PASSWORD_ADMIN}"' in client


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_each_service_logs_in_to_kafka_as_itself(
    services: dict[str, Any],
    kafka_props: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    env = services[name]["environment"]
    assert env["CARBON_KAFKA_SECURITY_PROTOCOL"] in SASL_PROTOCOLS
    assert env["CARBON_KAFKA_SASL_USERNAME"] == name
    assert env["CARBON_KAFKA_SASL_PASSWORD"] == kafka_password(name)
    # SCRAM on the listener the services reach (kafka:9092); the broker never stores it.
    assert env["CARBON_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["CARBON_KAFKA_SASL_MECHANISM"] in enabled_mechanisms(kafka_props, "INTERNAL")
    # The ACLs name groups with the default prefix.
    assert env.get("CARBON_GROUP_PREFIX", "carbon") == "carbon"
    # And the service's settings accept that environment.
    for key in [k for k in os.environ if k.startswith("CARBON_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, re.sub(r"\$\{[^}]*\}", "x" * 32, str(value)))
    settings = Settings(service=name)
    assert settings.kafka_sasl_username == name


def test_kafka_passwords_are_required_variables_one_per_principal(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    references = re.findall(r"\$\{(CARBON_KAFKA_PASSWORD_\w+)([^}]*)\}", text)
    assert {name for name, _ in references} == {
        f"CARBON_KAFKA_PASSWORD_{p.upper().replace('-', '_')}"
        for p in [ADMIN, *SERVICE_PORTS, *EXTERNAL_SYSTEMS]
    }
    for name, rest in references:
        assert rest == f":?set {name}", f"{name} must be required (${{{name}:?set {name}}})"
    # No literal password or JAAS user anywhere else.
    usernames = [
        svc["environment"]["CARBON_KAFKA_SASL_USERNAME"]
        for svc in compose["services"].values()
        if "CARBON_KAFKA_SASL_USERNAME" in svc.get("environment", {})
    ]
    assert sorted(usernames) == sorted([ADMIN, *SERVICE_PORTS])  # topics job + the services
    for svc in compose["services"].values():
        env = svc.get("environment", {})
        if "CARBON_KAFKA_SASL_PASSWORD" in env:
            assert env["CARBON_KAFKA_SASL_PASSWORD"] == kafka_password(
                env["CARBON_KAFKA_SASL_USERNAME"]
            )


def test_topics_job_logs_in_as_admin(services: dict[str, Any]) -> None:
    env = services["topics"]["environment"]
    assert env["CARBON_KAFKA_SECURITY_PROTOCOL"] in SASL_PROTOCOLS
    assert env["CARBON_KAFKA_SASL_MECHANISM"] == "PLAIN"
    assert env["CARBON_KAFKA_SASL_USERNAME"] == ADMIN
    assert env["CARBON_KAFKA_SASL_PASSWORD"] == kafka_password(ADMIN)


def test_acls_job_creates_the_service_users_and_applies_the_acls(services: dict[str, Any]) -> None:
    acls = services["acls"]
    assert acls["image"] == services["kafka"]["image"] == KAFKA_IMAGE
    assert dependency_conditions(acls) == {"kafka": "service_healthy"}
    assert acls.get("restart", "no") == "no"
    shell, script = acls["command"]
    assert shell == "sh"
    assert host_path(acls, script) == KAFKA_DIR / "provision.sh"
    env = acls["environment"]
    assert env["BOOTSTRAP"] == BOOTSTRAP
    for principal in [ADMIN, *SERVICE_PORTS, *EXTERNAL_SYSTEMS]:
        variable = f"CARBON_KAFKA_PASSWORD_{principal.upper().replace('-', '_')}"
        assert env[variable] == kafka_password(principal)
    provision = (KAFKA_DIR / "provision.sh").read_text()
    for name in [*SERVICE_PORTS, *EXTERNAL_SYSTEMS]:  # the external systems log in as themselves
        assert f'scram_user {name} "{kafka_password(name)}"' in provision
    assert '--add-config "SCRAM-SHA-512=[password=$2]"' in provision
    assert 'sh "$here/admin-client.sh" > "$CONFIG"' in provision
    assert 'sh "$here/acls.sh"' in provision
    assert "set -eu" in provision.splitlines()


def test_acl_script_is_the_output_of_carbon_acls() -> None:
    """deploy/kafka/acls.sh is generated: `.venv/bin/carbon acls > deploy/kafka/acls.sh`."""
    assert (KAFKA_DIR / "acls.sh").read_text() == acl_script(catalogue(), "carbon"), (
        "deploy/kafka/acls.sh is stale: run `.venv/bin/carbon acls > deploy/kafka/acls.sh`"
    )


def test_acl_script_lets_only_a_topics_owner_write_it() -> None:
    grants = parse_acl_script((KAFKA_DIR / "acls.sh").read_text())
    topics = load_yaml(ROOT / "contracts" / "topics.yaml")["topics"]
    service_principals = {f"User:{name}" for name in SERVICE_PORTS}
    for topic in topics:
        writers = {
            principal
            for (principal, kind, name), ops in grants.items()
            if (kind, name) == ("topic", topic["name"]) and ops & {"Write", "All"}
        }
        assert writers == {f"User:{topic['owner']}"}, topic["name"]
    for (principal, kind, name), ops in grants.items():
        if principal in service_principals:
            assert kind != "cluster", (principal, ops)
            assert "All" not in ops and "Alter" not in ops, (principal, name)
            owner = any(t["name"] == name and principal == f"User:{t['owner']}" for t in topics)
            if "Write" in ops:
                assert owner, (principal, name)
            if "Create" in ops:  # its own topics, and the topic Faust's leader assignor creates
                assert owner or name == f"carbon-{principal[5:]}-__assignor-__leader", name
        elif principal[5:] in EXTERNAL_SYSTEMS:  # writes its inbound topics, nothing more
            assert kind == "topic" and ops == {"Write", "Describe"}, (principal, name, ops)
            assert any(t["name"] == name and t["owner"] == principal[5:] for t in topics), name
        else:
            assert principal == f"User:{ADMIN}", principal
    for name in SERVICE_PORTS:
        assert grants[(f"User:{name}", "group", f"carbon-{name}")] >= {"Read"}
        assert grants[(f"User:{name}", "topic", f"{name}.dlq")] >= {"Read", "Write"}


# --- Dockerfile and .dockerignore -------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_the_locked_workspace_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    locked_uv = next(
        p["version"]
        for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
        if p["name"] == "uv"
    )
    assert re.search(rf"pip install \"?uv=={re.escape(locked_uv)}\"?", runs)
    assert "uv sync --frozen --no-dev" in runs
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert not [op for op, _ in instructions if op in {"CMD", "ENTRYPOINT"}]


def test_dockerfile_dependency_layer_copies_every_workspace_manifest() -> None:
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    copies = [arg.split()[0] for op, arg in dockerfile_instructions() if op == "COPY"]
    for member in members["members"]:
        assert f"{member}/pyproject.toml" in copies, member


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    patterns = {
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git"} <= patterns
    assert any("__pycache__" in p for p in patterns)
    assert not patterns & {"contracts", "services", "deploy", "uv.lock", "pyproject.toml", "*"}


# --- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_scrapes_a_job_per_service_every_5s() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    default_interval = config.get("global", {}).get("scrape_interval")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in SERVICE_PORTS.items():
        job = jobs[name]
        # Every replica, by DNS: the compose service name resolves to each of them (A records).
        assert job["dns_sd_configs"] == [{"names": [name], "type": "A", "port": port}]
        assert not [k for k in job if k.endswith("_sd_configs") and k != "dns_sd_configs"]
        assert "static_configs" not in job
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job.get("scrape_interval", default_interval) == "5s"
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_DIR / rule_file).is_file()


def test_every_alert_has_a_window_a_severity_a_summary_and_a_runbook(
    alert_rules: list[dict[str, Any]],
) -> None:
    assert alert_rules
    for rule in alert_rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), name
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), name
        runbook = annotations.get("runbook", "").strip()
        assert runbook and "\n" not in runbook, name
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names))


def test_every_alert_links_its_runbook_in_the_repo(alert_rules: list[dict[str, Any]]) -> None:
    for rule in alert_rules:
        name = rule["alert"]
        assert rule["annotations"].get("runbook_url") == f"deploy/runbooks/{name}.md", name
        runbook = ROOT / rule["annotations"]["runbook_url"]
        assert runbook.is_file(), name
        text = runbook.read_text(encoding="utf-8")
        assert text.startswith(f"# {name}\n"), name
        headings = [line.strip() for line in text.splitlines() if line.startswith("## ")]
        assert [h for h in headings if h in RUNBOOK_SECTIONS] == list(RUNBOOK_SECTIONS), name
        for section in text.split("\n## ")[1:]:
            assert section.split("\n", 1)[1].strip(), f"{name}: empty {section.splitlines()[0]}"


def test_every_runbook_belongs_to_an_alert(alert_rules: list[dict[str, Any]]) -> None:
    runbooks = {path.stem for path in RUNBOOKS.glob("*.md") if path.name != "README.md"}
    assert runbooks == {rule["alert"] for rule in alert_rules}


def test_runbooks_give_real_carbon_commands() -> None:
    """Each `carbon` command a runbook gives (run from .venv/bin, in a container, or quoted) is
    one the CLI defines."""
    from typer.testing import CliRunner

    from carbon_platform.cli import app

    invoked = re.compile(r"(?:\.venv/bin/|exec (?:-T )?[a-z]+ |`)carbon ((?:dlq )?[a-z-]+)")
    runner = CliRunner()
    seen = set()
    for path in RUNBOOKS.glob("*.md"):
        for command in invoked.findall(path.read_text(encoding="utf-8")):
            seen.add(command)
            result = runner.invoke(app, [*command.split(), "--help"])
            assert result.exit_code == 0, f"{path.name}: carbon {command}: {result.output}"
    assert {"dlq list", "dlq replay", "token", "topics", "reconcile"} <= seen


def test_every_alert_has_a_promtool_test_that_makes_it_fire(
    alert_rules: list[dict[str, Any]],
) -> None:
    firing: set[str] = set()
    for case in load_yaml(PROMETHEUS_DIR / "alerts.test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                firing.add(check["alertname"])
    missing = {rule["alert"] for rule in alert_rules} - firing
    assert not missing, f"no promtool test makes these fire: {sorted(missing)}"


def test_every_alert_has_a_comment_saying_why() -> None:
    lines = (PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if re.match(r"\s*- alert:", line):
            above = next(prev for prev in reversed(lines[:index]) if prev.strip())
            assert above.strip().startswith("#"), line.strip()


def test_alerts_use_only_service_metrics_and_cover_the_failure_modes(
    alert_rules: list[dict[str, Any]],
) -> None:
    used: set[str] = set()
    for rule in alert_rules:
        names = metric_names(str(rule["expr"]))
        assert names <= METRICS, f"{rule['alert']}: unknown {sorted(names - METRICS)}"
        used |= names
    assert {
        "carbon_worker_ready",
        "carbon_broker_up",
        "carbon_outbox_parked",
        "carbon_outbox_republished_total",
        "carbon_outbox_oldest_age_seconds",
        "carbon_dead_letters_total",
        "carbon_relay_errors_total",
        "carbon_http_requests_total",
        "carbon_event_handle_seconds",
    } <= used
    assert any(re.search(r"\bup\s*==\s*0\b", str(rule["expr"])) for rule in alert_rules)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ],
    ids=["config", "rules", "rule-tests"],
)
def test_promtool_accepts_config_and_rules(args: list[str]) -> None:
    result = subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Alertmanager -----------------------------------------------------------------------------


def test_prometheus_sends_alerts_to_the_compose_alertmanager(services: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    [manager] = config["alerting"]["alertmanagers"]
    targets = [t for sc in manager["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    assert "9093" in str(services["alertmanager"]["ports"])


def test_alertmanager_routes_every_alert_to_the_notifiers_intake() -> None:
    config = load_yaml(ALERTMANAGER_FILE)
    route = config["route"]
    assert not route.get("routes")  # one receiver: nothing is routed elsewhere
    assert set(route["group_by"]) == {"alertname", "job"}
    [receiver] = [r for r in config["receivers"] if r["name"] == route["receiver"]]
    [webhook] = receiver["webhook_configs"]
    notifier = SERVICE_PORTS["notifier"]
    assert webhook["url"] == f"http://notifier:{notifier}/alerts"
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"


def test_alertmanager_reads_the_token_the_token_job_writes(services: dict[str, Any]) -> None:
    """The token job mints a Bureau JWT with the stack's secret into a volume; Alertmanager
    mounts that volume where its config reads the bearer token from."""
    job, manager = services["alertmanager-token"], services["alertmanager"]
    assert job["image"] == services["notifier"]["image"]
    assert job["environment"]["CARBON_JWT_SECRET"] == JWT_SECRET
    assert job.get("restart", "no") == "no"
    command = " ".join(job["command"])
    assert "carbon token --role regulator" in command
    written = PurePosixPath(command.rsplit("> ", 1)[1].strip())
    [(volume, target)] = [str(v).split(":")[:2] for v in job["volumes"]]
    credentials = load_yaml(ALERTMANAGER_FILE)["receivers"][0]["webhook_configs"][0]["http_config"][
        "authorization"
    ]["credentials_file"]
    mounted = {str(v).split(":")[0]: str(v).split(":")[1] for v in manager["volumes"]}
    assert PurePosixPath(mounted[volume]) / written.relative_to(target) == PurePosixPath(
        credentials
    )
    assert dependency_conditions(manager) == {
        "alertmanager-token": "service_completed_successfully"
    }
    config_file = next(a for a in manager["command"] if a.startswith("--config.file="))
    assert host_path(manager, config_file.split("=", 1)[1]) == ALERTMANAGER_FILE


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not installed")
def test_amtool_accepts_the_alertmanager_config() -> None:
    result = subprocess.run(
        ["amtool", "check-config", str(ALERTMANAGER_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana ------------------------------------------------------------------------------------


def test_grafana_datasource_is_the_compose_prometheus(dashboard: dict[str, Any]) -> None:
    path = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    (source,) = load_yaml(path)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_dashboard_identity_and_service_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "carbon-overview"
    assert dashboard["schemaVersion"] == 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    query = variables["service"]["query"]
    query = query["query"] if isinstance(query, dict) else query
    assert re.fullmatch(r"label_values\(\s*up\s*,\s*job\s*\)", query)


def test_dashboard_panels_have_unique_ids_targets_and_fit_the_grid(
    dashboard: dict[str, Any],
) -> None:
    panels = list(all_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), panel["title"]
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_queries_use_only_service_metrics_and_show_them_all(
    dashboard: dict[str, Any],
) -> None:
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard):
        names = metric_names(expr)
        assert names <= METRICS, f"unknown {sorted(names - METRICS)} in {expr}"
        used |= names
    assert used == METRICS, f"not on the dashboard: {sorted(METRICS - used)}"
    assert any(re.match(r"up\b", expr) for expr in dashboard_exprs(dashboard))


# --- Deadline progress: the obligation gauges ---------------------------------------------------

# Figures each instance of a service computes from the service's database: every instance reports
# the same, so a query takes one instance's figure (max over instances), never their sum.
SAME_ON_EVERY_INSTANCE = {
    gauge._name: frozenset(gauge._labelnames)
    for gauge in (
        _metrics.OBLIGATIONS,
        _metrics.CASES_ESCALATED,
        _metrics.DEADLINE_SECONDS,
        # The compliance figures (carbon_platform.figures), likewise from each service's database.
        _metrics.REPORTS_SUBMITTED,
        _metrics.ALLOWANCES_ISSUED,
        _metrics.ALLOWANCES_SURRENDERED,
        _metrics.OFFSETS_SURRENDERED,
        _metrics.NOTIFICATIONS,
        # Consumer lag (carbon_platform.lag): every instance measures every group at the broker.
        _metrics.CONSUMER_LAG,
    )
}
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(carbon_[a-z_]+)\s*(\{[^}]*\})?")
MAX_BY_OPENING = re.compile(r"max\s+by\s*\(([^)]*)\)\s*\(\s*$")


def over_instances_problems(expr: str) -> list[str]:
    """Uses of a same-on-every-instance gauge in `expr` that are not `max by (...) (gauge{...})`
    keeping every label of the gauge the selector does not pin with `=`: that max collapses the
    instances (job, instance) and nothing else, whatever sums follow."""
    problems = []
    for use in SELECTOR.finditer(expr):
        name, selector = use.group(1), use.group(2) or ""
        if name not in SAME_ON_EVERY_INSTANCE:
            continue
        opening = MAX_BY_OPENING.search(expr[: use.start()])
        if opening is None or not expr[use.end() :].lstrip().startswith(")"):
            problems.append(f"{name} not directly inside max by (...): {expr}")
            continue
        by = {label.strip() for label in opening.group(1).split(",") if label.strip()}
        pinned = set(re.findall(r'(\w+)\s*=\s*"', selector))  # `=` only, not `=~` or `!=`
        if missing := SAME_ON_EVERY_INSTANCE[name] - pinned - by:
            problems.append(f"{name}: max also collapses {sorted(missing)}: {expr}")
        if by & {"job", "instance"}:
            problems.append(f"{name}: max keeps the instances apart: {expr}")
    return problems


def test_over_instances_check_refuses_sums_and_lost_labels() -> None:
    good = (
        "sum by (obligation) (max by (obligation, district) "
        '(carbon_obligations{status="open"})) > 0'
    )
    assert over_instances_problems(good) == []
    for bad in [
        'sum by (obligation) (carbon_obligations{status="open"})',  # counts each instance
        "max by (obligation) (carbon_supervision_cases_escalated)",  # max over districts
        'max by (obligation, district) (carbon_obligations{status=~"open|overdue"})',
        "max by (obligation, instance) (carbon_obligation_deadline_seconds)",
        "max(carbon_obligation_deadline_seconds)",  # one figure for every obligation
    ]:
        assert over_instances_problems(bad), bad


def test_obligation_gauges_count_each_instance_once(
    alert_rules: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    exprs = {
        **{rule["alert"]: str(rule["expr"]) for rule in alert_rules},
        **{f"dashboard: {expr}": expr for expr in dashboard_exprs(dashboard)},
    }
    for where, expr in exprs.items():
        assert over_instances_problems(expr) == [], where
    alerted = {
        rule["alert"]: metric_names(str(rule["expr"])) & set(SAME_ON_EVERY_INSTANCE)
        for rule in alert_rules
    }
    assert alerted["CarbonEntitiesOpenNearDeadline"] == {
        "carbon_obligations",
        "carbon_obligation_deadline_seconds",
    }
    assert alerted["CarbonSupervisionCasesEscalated"] == {"carbon_supervision_cases_escalated"}


def test_dashboard_queries_use_only_defined_variables(dashboard: dict[str, Any]) -> None:
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    for expr in dashboard_exprs(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", expr)) - {"__rate_interval", "__range", "__interval"}
        assert used <= defined, f"undefined {sorted(used - defined)} in {expr}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    query = variables["obligation"]["query"]
    query = query["query"] if isinstance(query, dict) else query
    assert re.fullmatch(r"label_values\(\s*carbon_obligations\s*,\s*obligation\s*\)", query)
    assert not variables["obligation"]["multi"]  # its panel compares with obligation="..."
