"""Static checks of the Kubernetes manifests in deploy/k8s (no cluster needed).

The built-in kinds are validated against the Kubernetes OpenAPI schemas (strict: an unknown or
misspelt field fails), offline, with kubernetes-validate. The rest is cross-checked against the
facts the services are built to: their modules and ports, the variables their settings read,
their health routes, the topics they consume and the image's user.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from carbon_contracts.catalogue import catalogue
from carbon_platform.context import ServiceDefinition
from carbon_platform.settings import Settings
from notifier.delivery import DeliverySettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SERVICES = ("reporting", "verification", "registry", "notifier")
# The manifests must suit clusters this old: a field added to Kubernetes later fails the check.
KUBERNETES_VERSION = "1.30"
SECRET_TEMPLATE = "secrets.example.yaml"
PLACEHOLDER = "CHANGE_ME"
# Variables whose values are secret: only ever from a Secret, never in a manifest or ConfigMap.
SECRET_VARIABLES = {"CARBON_JWT_SECRET", "CARBON_DATABASE_URL", "CARBON_KAFKA_SASL_PASSWORD"}
# The only variables a Deployment may set inline: per-service, non-secret facts.
INLINE_VARIABLES = {"CARBON_HTTP_PORT", "CARBON_KAFKA_SASL_USERNAME", "CARBON_INSTANCE_ID"}
PROBES = {
    "startupProbe": "/health/live",
    "livenessProbe": "/health/live",
    "readinessProbe": "/health/ready",
}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def variables(*settings: type[BaseSettings]) -> set[str]:
    """The environment variables pydantic-settings reads for these settings classes."""
    names = set()
    for model in settings:
        prefix = model.model_config.get("env_prefix", "")
        names |= {f"{prefix}{field}".upper() for field in model.model_fields}
    return names


def definition(service: str) -> ServiceDefinition:
    found: ServiceDefinition = importlib.import_module(f"{service}.service").SERVICE
    return found


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the kustomization applies."""
    return [doc for name in kustomization["resources"] for doc in load_documents(K8S / name)]


@pytest.fixture(scope="module")
def secret_template() -> list[dict[str, Any]]:
    return load_documents(K8S / SECRET_TEMPLATE)


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


@pytest.fixture(scope="module")
def deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return of_kind(objects, "Deployment")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def all_manifest_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for index, doc in enumerate(load_documents(path)):
            yield f"{path.name}#{index}", doc


def is_built_in(doc: dict[str, Any]) -> bool:
    """A kind of Kubernetes itself (core or a *.k8s.io group), not a CRD nor kustomize's file."""
    group = doc["apiVersion"].rpartition("/")[0]
    return doc["kind"] != "Kustomization" and ("." not in group or group.endswith(".k8s.io"))


BUILT_IN = [
    pytest.param(doc, id=f"{where}-{doc['kind']}")
    for where, doc in all_manifest_documents()
    if is_built_in(doc)
]


# --- the files ----------------------------------------------------------------------------------


def test_kustomization_applies_every_manifest_but_the_secret_template(
    kustomization: dict[str, Any],
) -> None:
    files = {path.name for path in K8S.glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml", SECRET_TEMPLATE}
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))
    assert list(K8S.glob("*.yml")) == [], "use .yaml, as the kustomization lists them"


@pytest.mark.parametrize("manifest", BUILT_IN)
def test_built_in_kinds_match_the_kubernetes_schema(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_schema_check_covers_every_built_in_kind(objects: list[dict[str, Any]]) -> None:
    checked = {
        (doc["apiVersion"], doc["kind"]) for _, doc in all_manifest_documents() if is_built_in(doc)
    }
    applied = {(obj["apiVersion"], obj["kind"]) for obj in objects}
    assert applied - checked == {("monitoring.coreos.com/v1", "PodMonitor")}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "Job", "Secret"} <= {
        kind for _, kind in checked
    }


def test_everything_lands_in_the_platform_namespace(
    kustomization: dict[str, Any],
    objects: list[dict[str, Any]],
    secret_template: list[dict[str, Any]],
) -> None:
    namespace = kustomization["namespace"]
    assert of_kind(objects, "Namespace").keys() == {namespace}
    for obj in objects:
        assert obj["metadata"].get("namespace", namespace) == namespace, obj["metadata"]["name"]
    for secret in secret_template:
        # Applied on its own, outside the kustomization: it names the namespace itself.
        assert secret["metadata"]["namespace"] == namespace


def test_containers_run_the_image_the_kustomization_sets(
    kustomization: dict[str, Any], objects: list[dict[str, Any]]
) -> None:
    (image,) = kustomization["images"]
    workloads = [obj for obj in objects if obj["kind"] in {"Deployment", "Job"}]
    assert len(workloads) == len(SERVICES) + 1
    for workload in workloads:
        assert container(workload)["image"] == image["name"]


# --- the services ---------------------------------------------------------------------------------


def test_a_deployment_and_a_service_per_service(objects: list[dict[str, Any]]) -> None:
    assert set(of_kind(objects, "Deployment")) == set(SERVICES)
    assert set(of_kind(objects, "Service")) == set(SERVICES)
    assert set(of_kind(objects, "PodDisruptionBudget")) == set(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_runs_its_module_on_its_port(
    deployments: dict[str, dict[str, Any]], objects: list[dict[str, Any]], name: str
) -> None:
    deployment = deployments[name]
    port = definition(name).port
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == name
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    main = container(deployment)
    assert main["command"] == ["python", "-m", name]
    assert main["ports"] == [{"name": "http", "containerPort": port}]
    inline = {env["name"]: env for env in main["env"]}
    assert inline["CARBON_HTTP_PORT"]["value"] == str(port)
    # Its own Kafka principal, named after it (the ACLs of `carbon acls`).
    assert inline["CARBON_KAFKA_SASL_USERNAME"]["value"] == name
    assert inline["CARBON_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    service = of_kind(objects, "Service")[name]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_probes_the_health_routes(
    deployments: dict[str, dict[str, Any]], name: str
) -> None:
    main = container(deployments[name])
    routes = (ROOT / "services/platform/carbon_platform/http.py").read_text(encoding="utf-8")
    for probe, path in PROBES.items():
        get = main[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in {"http", definition(name).port}, probe
        assert f'"{path}"' in routes, f"no {path} route in carbon_platform/http.py"
    # Liveness must not restart an instance its readiness only keeps out of the Service.
    assert main["livenessProbe"]["httpGet"]["path"] != "/health/ready"


@pytest.mark.parametrize("name", SERVICES)
def test_replicas_do_not_outnumber_the_partitions_they_share(
    deployments: dict[str, dict[str, Any]], objects: list[dict[str, Any]], name: str
) -> None:
    consumed = [catalogue().topic(topic).partitions for topic in definition(name).handlers]
    replicas = deployments[name]["spec"]["replicas"]
    # An instance beyond the busiest topic's partitions would get none to consume.
    assert 1 <= replicas <= max(consumed)
    # A drain must be able to evict one of them.
    budget = of_kind(objects, "PodDisruptionBudget")[name]["spec"]
    assert budget["minAvailable"] < replicas
    assert budget["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def test_pods_run_as_the_images_user_on_a_read_only_root(objects: list[dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    for workload in (obj for obj in objects if obj["kind"] in {"Deployment", "Job"}):
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsUser"] == uid, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        security = container(workload)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name


@pytest.mark.parametrize("name", SERVICES)
def test_var_dir_is_a_writable_volume(
    deployments: dict[str, dict[str, Any]], objects: list[dict[str, Any]], name: str
) -> None:
    var_dir = of_kind(objects, "ConfigMap")["carbon-config"]["data"]["CARBON_VAR_DIR"]
    pod = pod_spec(deployments[name])
    mounts = {m["mountPath"]: m["name"] for m in container(deployments[name])["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[var_dir]]


# --- configuration and secrets -------------------------------------------------------------------


def known_variables(name: str) -> set[str]:
    return variables(Settings, DeliverySettings) if name == "notifier" else variables(Settings)


def environment(
    workload: dict[str, Any],
    objects: list[dict[str, Any]],
    secret_template: list[dict[str, Any]],
) -> dict[str, str]:
    """The variables a workload's container gets (later sources win, `env` over `envFrom`),
    the Secrets' values taken from the template."""
    config_maps = of_kind(objects, "ConfigMap")
    secrets = of_kind(secret_template, "Secret")
    main = container(workload)
    env: dict[str, str] = {}
    for source in main.get("envFrom", []):
        assert source.keys() <= {"configMapRef", "secretRef"}, source
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
        else:
            env.update(secrets[source["secretRef"]["name"]]["stringData"])
    for variable in main.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            assert variable["valueFrom"].keys() == {"fieldRef"}, variable["name"]
            env[variable["name"]] = f"{workload['metadata']['name']}-pod"
    return env


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_env_comes_from_config_maps_and_secrets(
    deployments: dict[str, dict[str, Any]],
    objects: list[dict[str, Any]],
    secret_template: list[dict[str, Any]],
    name: str,
) -> None:
    main = container(deployments[name])
    sources = [next(iter(source.values()))["name"] for source in main["envFrom"]]
    assert {"carbon-config", "carbon-jwt", f"carbon-{name}"} <= set(sources)
    assert {env["name"] for env in main["env"]} == INLINE_VARIABLES
    env = environment(deployments[name], objects, secret_template)
    unknown = set(env) - known_variables(name)
    assert not unknown, f"{name} reads no {sorted(unknown)}"
    assert set(env) >= SECRET_VARIABLES


def test_secrets_are_never_inline(
    objects: list[dict[str, Any]], secret_template: list[dict[str, Any]]
) -> None:
    assert not of_kind(objects, "Secret"), "Secrets are applied from outside git"
    for config_map in of_kind(objects, "ConfigMap").values():
        assert not set(config_map["data"]) & SECRET_VARIABLES, config_map["metadata"]["name"]
    for workload in (obj for obj in objects if obj["kind"] in {"Deployment", "Job"}):
        for variable in container(workload).get("env", []):
            assert variable["name"] not in SECRET_VARIABLES, workload["metadata"]["name"]
    # The template holds placeholders only, in every secret value.
    for secret in secret_template:
        for key, value in secret["stringData"].items():
            if key in SECRET_VARIABLES:
                assert PLACEHOLDER in value, f"{secret['metadata']['name']}: {key}"


@pytest.mark.parametrize("name", SERVICES)
def test_filled_in_configuration_starts_the_service(
    deployments: dict[str, dict[str, Any]],
    objects: list[dict[str, Any]],
    secret_template: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """The manifests' variables, the template's placeholders replaced, are a valid
    configuration: every required setting is there, every value parses."""
    for variable in [v for v in os.environ if v.startswith("CARBON_")]:
        monkeypatch.delenv(variable)
    for key, value in environment(deployments[name], objects, secret_template).items():
        monkeypatch.setenv(key, value.replace(PLACEHOLDER, "x" * 40))
    settings = Settings(service=name)
    assert settings.http_port == definition(name).port
    assert settings.http_host == "0.0.0.0"
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_username == name
    assert settings.resolved_database_url().startswith("postgresql+asyncpg://")
    assert settings.instance_id
    if name == "notifier":
        DeliverySettings()
    # The placeholder itself is refused: an unfilled template never starts a service.
    monkeypatch.setenv("CARBON_JWT_SECRET", PLACEHOLDER)
    with pytest.raises(ValueError, match="jwt_secret"):
        Settings(service=name)


def test_topics_job_creates_the_catalogue_as_the_admin_principal(
    objects: list[dict[str, Any]], secret_template: list[dict[str, Any]]
) -> None:
    (job,) = of_kind(objects, "Job").values()
    main = container(job)
    # The brokers come from CARBON_KAFKA_BOOTSTRAP, which `carbon topics` reads.
    assert main["command"] == ["carbon", "topics", "--create"]
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}
    env = environment(job, objects, secret_template)
    assert env["CARBON_KAFKA_SASL_USERNAME"] == "admin"
    assert "CARBON_KAFKA_SASL_PASSWORD" in env
    assert "CARBON_KAFKA_BOOTSTRAP" in env
    assert set(env) <= variables(Settings)


# --- metrics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_scrape_annotations_name_the_metrics_port(
    deployments: dict[str, dict[str, Any]], name: str
) -> None:
    annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(
        container(deployments[name])["ports"][0]["containerPort"]
    )
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pod_monitor_scrapes_every_service_as_its_own_job(
    deployments: dict[str, dict[str, Any]], objects: list[dict[str, Any]]
) -> None:
    (monitor,) = of_kind(objects, "PodMonitor").values()
    spec = monitor["spec"]
    (expression,) = spec["selector"]["matchExpressions"]
    assert expression["operator"] == "In"
    assert set(expression["values"]) == set(SERVICES)
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "5s"
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels[expression["key"]] == name
        # The job label is the service's name, as the alert rules and dashboards expect.
        assert labels[spec["jobLabel"]] == name
        assert endpoint["port"] in {port["name"] for port in container(deployment)["ports"]}
