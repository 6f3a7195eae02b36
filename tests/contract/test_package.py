"""The contracts package as an integrator installs it: `pip install ./contracts`, and the sdist
and the wheel `uv build contracts` makes, each into a fresh venv, then used there: the data
files inside, the catalogue, a schema found by its ce_dataschema, a record read by from_record.

Offline, as every test: the builds use the project venv's hatchling, and pip in the fresh venv
finds the package's dependencies (and, for the sdist, the build backend) only in a local
wheelhouse repacked from this venv's installed distributions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import Distribution, distribution
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.support import REPO

PROJECT = REPO / "contracts"
VERSION = re.search(r'^version = "(.+)"$', (PROJECT / "pyproject.toml").read_text(), re.M)
# What pip needs besides the artefact: its dependencies, and hatchling to build the sdist.
NEEDED = ("pydantic", "pyyaml", "hatchling")

# Run inside the fresh venv: everything printed comes from the installed package.
USE_THE_PACKAGE = r"""
import json
from importlib.metadata import version

import carbon_contracts
from carbon_contracts import dataschema_uri, event_type_name, from_record, schema_for, validate
from carbon_contracts.catalogue import catalogue
from carbon_contracts.policy import default_policy_path, load_policy
from carbon_contracts.resources import contract_path

example = contract_path("events/report.submitted/examples/pudong-chemicals-2024.json")
value = example.read_bytes()
body = json.loads(value)
headers = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"5b0a3a57-8b0e-4f5e-9d3e-0c6f2f1e9a11"),
    ("ce_source", b"/carbon/reporting"),
    ("ce_type", event_type_name("report.submitted", 1).encode()),
    ("ce_time", b"2025-03-20T16:45:12+08:00"),
    ("ce_subject", body["credit_code"].encode()),
    ("ce_dataschema", dataschema_uri("report.submitted", 1).encode()),
    ("content-type", b"application/json"),
]
event, payload = from_record(
    headers, body["credit_code"].encode(), value, topic="report.submitted"
)
print(json.dumps({
    "version": version("carbon-contracts"),
    "package": carbon_contracts.__file__,
    "topics": contract_path("topics.yaml").as_posix(),
    "report_topic_owner": catalogue().topic("report.submitted").owner,
    "policy": load_policy(default_policy_path()).cycle,
    "schema_id": schema_for(event.dataschema)["$id"],
    "event": [event.event, event.major, event.source],
    "model": type(payload).__name__,
    "total": str(payload.total_emissions),
    "validated": type(validate(body, event.dataschema)).__name__,
}))
"""


def build(out: Path) -> tuple[Path, Path]:
    """`uv build contracts`: the sdist, then the wheel from the sdist (so the sdist must carry
    everything the wheel needs)."""
    uv = Path(sys.executable).parent / "uv"
    command = [str(uv), "build", "--offline", "--no-build-isolation", "--python", sys.executable]
    subprocess.run([*command, str(PROJECT), "--out-dir", str(out)], check=True, env=_env())
    return next(out.glob("*.tar.gz")), next(out.glob("*.whl"))


def wheelhouse(into: Path) -> Path:
    """NEEDED and what they need, as wheels repacked from this venv's installed files."""
    into.mkdir()
    found: dict[str, Distribution] = {}
    todo = list(NEEDED)
    while todo:
        dist = distribution(todo.pop())
        name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
        if name in found:
            continue
        found[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    for name, dist in found.items():
        _repack(name, dist, into)
    return into


def _repack(name: str, dist: Distribution, into: Path) -> None:
    """An installed distribution back into a wheel: its RECORDed files inside site-packages."""
    wheel_file = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if "Tag:" in line]
    python, abi, platform = (
        ".".join(dict.fromkeys(t.split("-")[i] for t in tags)) for i in range(3)
    )
    with zipfile.ZipFile(into / f"{name}-{dist.version}-{python}-{abi}-{platform}.whl", "w") as whl:
        for path in dist.files or []:
            if path.parts[0] != ".." and "__pycache__" not in path.parts:
                whl.write(Path(str(dist.locate_file(path))), path.as_posix())


def _env() -> dict[str, str]:
    """No index nor links of the machine's pip configuration; uv never fetches a Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_PYTHON_DOWNLOADS": "never"}


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    sdist, wheel = build(tmp_path_factory.mktemp("dist"))
    return {"directory": PROJECT, "sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheelhouse(tmp_path_factory.mktemp("links") / "wheels")


def test_the_builds_carry_the_data_files(artefacts: dict[str, Path]) -> None:
    assert VERSION is not None
    assert artefacts["sdist"].name == f"carbon_contracts-{VERSION[1]}.tar.gz"
    with zipfile.ZipFile(artefacts["wheel"]) as wheel:
        names = set(wheel.namelist())
    for path in (
        "carbon_contracts/subscriber.py",
        "carbon_contracts/data/topics.yaml",
        "carbon_contracts/data/asyncapi.yaml",
        "carbon_contracts/data/policies/shanghai-2024.yaml",
        "carbon_contracts/data/events/report.submitted/v1.schema.json",
        "carbon_contracts/data/events/report.submitted/examples/pudong-chemicals-2024.json",
    ):
        assert path in names
    assert not any("released/" in name for name in names)


@pytest.mark.parametrize("artefact", ["directory", "sdist", "wheel"])
def test_pip_installs_it_into_a_fresh_venv_that_uses_it(
    artefact: str, artefacts: dict[str, Path], links: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env())
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--no-compile", "--no-index", "--find-links"]
    subprocess.run([*pip, links, artefacts[artefact]], check=True, env=_env(), cwd=tmp_path)
    used = subprocess.run(
        [python, "-c", USE_THE_PACKAGE],
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    seen: dict[str, Any] = json.loads(used.stdout)
    assert VERSION is not None and seen["version"] == VERSION[1]
    # The code and the data both come from the fresh venv, not from this repository.
    site = venv.resolve() / "lib"
    assert Path(seen["package"]).resolve().is_relative_to(site)
    assert Path(seen["topics"]) == Path(seen["package"]).parent / "data" / "topics.yaml"
    assert seen["report_topic_owner"] == "reporting"
    assert seen["policy"] == "shanghai-2024"
    assert seen["schema_id"].endswith("/events/report.submitted/v1.schema.json")
    assert seen["event"] == ["report.submitted", 1, "/carbon/reporting"]
    assert seen["model"] == seen["validated"] == "ReportSubmitted"
    assert seen["total"] == "24251.551"
