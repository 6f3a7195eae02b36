"""`carbon`: start the embedded stack, mint development tokens, show and create topics."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import SecretStr

from carbon_contracts.catalogue import catalogue
from carbon_platform.auth import ROLES, Role, issue_token
from carbon_platform.broker import create_topics, start_tansu, stop_process
from carbon_platform.settings import REPO_ROOT, Settings

SERVICES: dict[str, int] = {
    "reporting": 8001,
    "verification": 8002,
    "registry": 8003,
    "notifier": 8004,
}

app = typer.Typer(help="Carbon ETS platform: run it locally and talk to it.", no_args_is_help=True)


def _dev_secret(var_dir: Path) -> str:
    """The JWT secret of the embedded stack: CARBON_JWT_SECRET, else one kept under var/."""
    if os.environ.get("CARBON_JWT_SECRET"):
        return os.environ["CARBON_JWT_SECRET"]
    path = var_dir / "dev-jwt-secret"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _default_var_dir() -> Path:
    return Path(os.environ.get("CARBON_VAR_DIR", REPO_ROOT / "var"))


@app.command()
def up(
    kafka_port: Annotated[int, typer.Option(help="port of the embedded broker")] = 9092,
    port_offset: Annotated[int, typer.Option(help="added to every service's HTTP port")] = 0,
    var_dir: Annotated[Path | None, typer.Option(help="databases, logs, dev secret")] = None,
    schema_prefix: Annotated[str, typer.Option(help="PostgreSQL schema prefix")] = "",
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for readiness")] = 120,
) -> None:
    """Start the embedded stack: broker, topics, migrations and all four services.

    Uses the broker in CARBON_KAFKA_BOOTSTRAP instead of starting one when that is set.
    Ctrl-C stops everything.
    """
    var = (var_dir or _default_var_dir()).resolve()
    logs = var / "log"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CARBON_JWT_SECRET"] = _dev_secret(var)
    env["CARBON_VAR_DIR"] = str(var)
    env.setdefault("CARBON_LOG_FORMAT", "json")
    broker = None
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, a stop request, or the terminal closing: the same orderly stop. Set explicitly,
    # since a shell that starts us in the background leaves SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    try:
        if "CARBON_KAFKA_BOOTSTRAP" not in os.environ:
            typer.echo(f"starting embedded broker (tansu) on 127.0.0.1:{kafka_port}")
            broker = start_tansu(kafka_port, logs / "broker.log")
            env["CARBON_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{kafka_port}"
        bootstrap = env["CARBON_KAFKA_BOOTSTRAP"]
        created = asyncio.run(create_topics(bootstrap, catalogue()))
        typer.echo(f"topics ready on {bootstrap} ({len(created)} created)")
        for service, port in SERVICES.items():
            service_env = {**env, "CARBON_HTTP_PORT": str(port + port_offset)}
            if schema_prefix:
                service_env["CARBON_DATABASE_SCHEMA"] = f"{schema_prefix}{service}"
            with (logs / f"{service}.log").open("ab") as output:
                processes[service] = subprocess.Popen(
                    [sys.executable, "-m", service],
                    env=service_env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # Out of the terminal's process group: Ctrl-C reaches only `carbon up`,
                    # which then stops everything in order.
                    start_new_session=True,
                )
        urls = {s: f"http://127.0.0.1:{p + port_offset}" for s, p in SERVICES.items()}
        _wait_ready(urls, processes, ready_timeout, logs)
        typer.echo("carbon platform is up:")
        for service, url in urls.items():
            typer.echo(f"  {service:<13} {url}   (API docs {url}/docs)")
        typer.echo(f"  kafka         {bootstrap}")
        typer.echo(f"  logs          {logs}")
        typer.echo("Ctrl-C stops everything.")
        while True:
            for service, process in processes.items():
                if process.poll() is not None:
                    typer.echo(f"{service} exited with {process.returncode}; see {logs}", err=True)
                    raise typer.Exit(1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:  # the broker or a service could not start
        typer.echo(f"carbon up failed: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        typer.echo("stopping...")
        # Services first, while the broker is still there for them to leave their groups.
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if broker is not None:
            stop_process(broker)
        typer.echo("stopped.")


def _wait_ready(
    urls: dict[str, str],
    processes: dict[str, subprocess.Popen[bytes]],
    timeout: float,
    logs: Path,
) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending:
        for service in list(pending):
            if processes[service].poll() is not None:
                raise RuntimeError(f"{service} exited while starting; see {logs / service}.log")
            try:
                with urllib.request.urlopen(f"{pending[service]}/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        del pending[service]
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout}s: {', '.join(pending)}; see {logs}")
        time.sleep(0.3)


@app.command()
def token(
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    credit_code: Annotated[str | None, typer.Option(help="entity role: its credit code")] = None,
    agency: Annotated[str | None, typer.Option(help="verifier role: its agency id")] = None,
    district: Annotated[str | None, typer.Option(help="district role: its district")] = None,
    subject: Annotated[str | None, typer.Option(help="user name in the token")] = None,
    hours: Annotated[float, typer.Option(help="validity")] = 12,
) -> None:
    """Print a development bearer token signed with the stack's secret."""
    from datetime import timedelta

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="--role")
    settings = Settings(jwt_secret=SecretStr(_dev_secret(_default_var_dir())))
    chosen = cast(Role, role)
    try:
        typer.echo(
            issue_token(
                settings,
                role=chosen,
                subject=subject or f"dev-{role}",
                now=datetime.now(UTC),
                credit_code=credit_code,
                agency=agency,
                district=district,
                ttl=timedelta(hours=hours),
            )
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error


@app.command()
def topics(
    create: Annotated[bool, typer.Option(help="create missing topics on the broker")] = False,
    bootstrap: Annotated[str, typer.Option(envvar="CARBON_KAFKA_BOOTSTRAP")] = "127.0.0.1:9092",
) -> None:
    """List the topic catalogue; with --create, provision it on a broker."""
    cat = catalogue()
    typer.echo(f"{'topic':<24}{'owner':<14}{'key':<13}{'partitions':>10}  event types")
    for topic in cat.topics:
        typer.echo(
            f"{topic.name:<24}{topic.owner:<14}{topic.key:<13}{topic.partitions:>10}  "
            f"{', '.join(topic.event_types) or '(dead letters)'}"
        )
    if create:
        created = asyncio.run(create_topics(bootstrap, cat))
        typer.echo(f"created on {bootstrap}: {', '.join(created) or 'nothing (all exist)'}")


dlq = typer.Typer(help="Dead-letter topics: look at them and replay them.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")


def _operator_call(service: str, url: str | None, method: str, path: str) -> Any:
    if service not in SERVICES:
        raise typer.BadParameter(f"service must be one of {', '.join(SERVICES)}")
    base = url or f"http://127.0.0.1:{SERVICES[service]}"
    settings = Settings(jwt_secret=SecretStr(_dev_secret(_default_var_dir())))
    bearer = issue_token(settings, role="regulator", subject="carbon-cli", now=datetime.now(UTC))
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"Bearer {bearer}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as error:
        typer.echo(
            f"{base}{path}: HTTP {error.code} {error.read().decode(errors='replace')}", err=True
        )
        raise typer.Exit(1) from error
    except OSError as error:  # refused, unreachable, timed out
        typer.echo(f"{base}{path}: {error} (is {service} running there? see --url)", err=True)
        raise typer.Exit(1) from error


@dlq.command("list")
def dlq_list(
    service: Annotated[str, typer.Argument(help="whose <service>.dlq to show")],
    url: Annotated[str | None, typer.Option(help="the service's base URL")] = None,
) -> None:
    """Show the letters on a service's dead-letter topic and why each was set aside."""
    letters = _operator_call(service, url, "GET", "/dead-letters")
    for letter in letters:
        typer.echo(
            f"{letter['original_topic']}/{letter['original_partition']}/"
            f"{letter['original_offset']}  {letter['error_class']}  {letter['ce_id']}"
        )
    typer.echo(f"{len(letters)} dead letters in {service}.dlq")


@dlq.command("replay")
def dlq_replay(
    service: Annotated[str, typer.Argument(help="whose <service>.dlq to replay")],
    url: Annotated[str | None, typer.Option(help="the service's base URL")] = None,
) -> None:
    """Run a service's dead letters through its consumer again, once the cause is fixed.

    They go through the same inbox: replaying twice applies nothing twice.
    """
    results = _operator_call(service, url, "POST", "/dead-letters/replay")
    for result in results:
        typer.echo(f"{result['ce_id']}: {result['outcome']}")
    typer.echo(f"{len(results)} dead letters replayed through {service}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
