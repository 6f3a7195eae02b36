"""Static checks of the container deployment: Dockerfile, docker-compose.yml and deploy/.

Nothing here needs Docker. The files are parsed and cross-checked against the facts the
services are built to: their ports, their `python -m <service>` commands, their configuration
variables and the names of the metrics they export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "carbon-overview.json"

SERVICE_PORTS = {"reporting": 8001, "verification": 8002, "registry": 8003, "notifier": 8004}
STACK = {"kafka", "postgres", "topics", *SERVICE_PORTS, "prometheus", "grafana"}
BOOTSTRAP = "kafka:9092"
JWT_SECRET = "${CARBON_JWT_SECRET:?set CARBON_JWT_SECRET}"

# Everything the services export (carbon_platform.metrics). `up` comes from Prometheus.
HISTOGRAMS = frozenset({"carbon_event_handle_seconds", "carbon_http_request_duration_seconds"})
METRICS = HISTOGRAMS | {
    "carbon_events_consumed_total",
    "carbon_events_published_total",
    "carbon_outbox_pending",
    "carbon_outbox_oldest_age_seconds",
    "carbon_dead_letters_total",
    "carbon_http_requests_total",
    "carbon_worker_ready",
    "carbon_relay_errors_total",
    "carbon_reports_submitted_total",
    "carbon_allowances_issued_total",
    "carbon_allowances_surrendered_total",
    "carbon_notifications_total",
}
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
    assert (port, port) in port_pairs(service)
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
def test_app_service_waits_for_broker_database_and_topics(
    services: dict[str, Any], name: str
) -> None:
    assert dependency_conditions(services[name]) == {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
        "topics": "service_completed_successfully",
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
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:{port}"]
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
