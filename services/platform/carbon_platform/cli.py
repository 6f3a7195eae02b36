"""`carbon`: start the embedded stack, mint development tokens, show and create topics, look after
dead letters and the ledger, stand in for the external systems and move the rehearsal clock."""

from __future__ import annotations

import asyncio
import functools
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
from carbon_contracts.errors import Invalid
from carbon_contracts.policy import load_policy
from carbon_platform.auth import ROLES, Role, issue_token
from carbon_platform.broker import create_topics
from carbon_platform.clock import (
    CLOCK_FILE,
    MAX_RATE,
    Clock,
    aware_time,
    default_var_dir,
    read_clock_file,
    rehearsal_clock_file,
    set_clock_file,
)
from carbon_platform.kafka import command_client_options
from carbon_platform.settings import Settings
from carbon_platform.sinks import sink
from carbon_platform.standins import external
from carbon_platform.supervisor import Supervisor

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


LOCAL_SMTP_PORT = 8025


@app.command()
def up(
    kafka_port: Annotated[int, typer.Option(help="port of the embedded broker")] = 9092,
    port_offset: Annotated[int, typer.Option(help="added to every service's HTTP port")] = 0,
    instances: Annotated[
        int, typer.Option(min=1, max=9, help="instances of each service (ports +10, +20...)")
    ] = 1,
    var_dir: Annotated[
        Path | None, typer.Option(help="databases, logs, dev secret, rehearsal clock")
    ] = None,
    schema_prefix: Annotated[str, typer.Option(help="PostgreSQL schema prefix")] = "",
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for readiness")] = 120,
) -> None:
    """Start the embedded stack: broker, topics, migrations and all four services.

    Uses the broker in CARBON_KAFKA_BOOTSTRAP instead of starting one when that is set. A
    process that dies is restarted. Ctrl-C stops everything. The services' clock follows
    `carbon clock set` while they run.
    """
    var = (var_dir or default_var_dir()).resolve()
    logs = var / "log"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CARBON_JWT_SECRET"] = _dev_secret(var)
    env["CARBON_VAR_DIR"] = str(var)
    # The services follow `carbon clock set` (a rehearsal tool: production never sets this).
    env["CARBON_CLOCK_FILE"] = str(var / CLOCK_FILE)
    env.setdefault("CARBON_LOG_FORMAT", "json")
    # The embedded stack mails a local SMTP server (e.g. `carbon sink smtp`), not port 25.
    env.setdefault("CARBON_SMTP_PORT", str(LOCAL_SMTP_PORT))
    supervisor = Supervisor(lambda line: typer.echo(line, err=True))

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, a stop request, or the terminal closing: the same orderly stop. Set explicitly,
    # since a shell that starts us in the background leaves SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    try:
        if "CARBON_KAFKA_BOOTSTRAP" in os.environ:
            bootstrap = env["CARBON_KAFKA_BOOTSTRAP"]
            created = asyncio.run(create_topics(bootstrap, catalogue(), **command_client_options()))
            typer.echo(f"topics ready on {bootstrap} ({len(created)} created)")
        else:
            typer.echo(f"starting embedded broker (tansu) on 127.0.0.1:{kafka_port}")
            bootstrap = supervisor.add_broker(kafka_port, logs / "broker.log")
            env["CARBON_KAFKA_BOOTSTRAP"] = bootstrap
        urls: dict[str, list[str]] = {}
        for service, port in SERVICES.items():
            for number in range(1, instances + 1):
                name = service if number == 1 else f"{service}-{number}"
                http_port = port + port_offset + 10 * (number - 1)
                service_env = {
                    **env,
                    "CARBON_HTTP_PORT": str(http_port),
                    # Named instances keep their outbox lease and group membership across a
                    # restart, so a restarted service is back at work at once.
                    "CARBON_INSTANCE_ID": f"{service}-{number}",
                }
                if schema_prefix:
                    service_env["CARBON_DATABASE_SCHEMA"] = f"{schema_prefix}{service}"
                url = f"http://127.0.0.1:{http_port}"
                urls.setdefault(service, []).append(url)
                log_file = logs / f"{name}.log"
                supervisor.add_service(
                    name, functools.partial(_spawn, service, service_env, log_file), url, log_file
                )
        supervisor.start()
        if supervisor.broker is not None:
            typer.echo(f"topics ready on {bootstrap}")
        deadline = time.monotonic() + ready_timeout
        while not supervisor.all_ready():
            supervisor.check()
            if time.monotonic() > deadline:
                waiting = [item.name for item in supervisor.everything if not item.ready]
                raise RuntimeError(
                    f"not ready after {ready_timeout}s: {', '.join(waiting)}; see {logs}"
                )
            time.sleep(0.3)
        typer.echo("carbon platform is up:")
        for service, addresses in urls.items():
            for url in addresses:
                typer.echo(f"  {service:<13} {url}   (API docs {url}/docs)")
        typer.echo(f"  kafka         {bootstrap}")
        typer.echo(f"  logs          {logs}")
        typer.echo("Ctrl-C stops everything.")
        while True:
            supervisor.check()
            time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:  # the broker or a service could not start, or kept failing
        typer.echo(f"carbon up failed: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        typer.echo("stopping...")
        supervisor.stop()
        typer.echo("stopped.")


def _spawn(service: str, env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", service],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Out of the terminal's process group: Ctrl-C reaches only `carbon up`, which then
            # stops everything in order.
            start_new_session=True,
        )


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
    settings = Settings(jwt_secret=SecretStr(_dev_secret(default_var_dir())))
    if district is not None:
        # A token for a district no entity can be registered under would see nothing.
        policy = load_policy(settings.policy_file)
        try:
            policy.ensure_district(district)
        except Invalid as refused:
            raise typer.BadParameter(
                f"{refused.message}; one of {', '.join(policy.districts)}", param_hint="--district"
            ) from None
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
    width = max(len(topic.name) for topic in cat.topics) + 2
    typer.echo(f"{'topic':<{width}}{'owner':<14}{'key':<13}{'partitions':>10}  event types")
    for topic in cat.topics:
        typer.echo(
            f"{topic.name:<{width}}{topic.owner:<14}{topic.key:<13}{topic.partitions:>10}  "
            f"{', '.join(topic.event_types) or '(dead letters)'}"
        )
    if create:
        created = asyncio.run(create_topics(bootstrap, cat, **command_client_options()))
        typer.echo(f"created on {bootstrap}: {', '.join(created) or 'nothing (all exist)'}")


@app.command()
def acls(
    group_prefix: Annotated[
        str, typer.Option(envvar="CARBON_GROUP_PREFIX", help="the services' consumer group prefix")
    ] = "carbon",
    admin: Annotated[str, typer.Option(help="principal that provisions topics")] = "admin",
) -> None:
    """Print the Kafka ACLs of the catalogue as a shell script of kafka-acls.sh lines.

    Each service may write only the topics it owns; run with BOOTSTRAP and CONFIG set
    (deploy/README.md).
    """
    from carbon_platform.kafka import acl_script

    typer.echo(acl_script(catalogue(), group_prefix, admin=admin), nl=False)


dlq = typer.Typer(help="Dead-letter topics: look at them and replay them.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")
app.add_typer(external, name="external")
app.add_typer(sink, name="sink")


def _operator_call(service: str, url: str | None, method: str, path: str) -> Any:
    if service not in SERVICES:
        raise typer.BadParameter(f"service must be one of {', '.join(SERVICES)}")
    base = url or f"http://127.0.0.1:{SERVICES[service]}"
    settings = Settings(jwt_secret=SecretStr(_dev_secret(default_var_dir())))
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


@app.command()
def reconcile(
    url: Annotated[str | None, typer.Option(help="the registry's base URL")] = None,
) -> None:
    """Prove the registry's ledger: holdings of allowances and offsets against the sum of the
    journal. Exits 1 and lists the differences if there are any."""
    found = _operator_call("registry", url, "GET", "/ledger/reconciliation")
    for difference in found["differences"]:
        typer.echo(
            f"{difference['credit_code']} {difference['asset']} {difference['vintage']}: "
            f"holdings {difference['holdings']}, journal {difference['journal']}"
        )
    typer.echo(
        f"{found['accounts']} accounts; allowances held {found['allowances_held']} = journal "
        f"{found['journal_allowances']}; unused offsets {found['offsets_unused']} = journal "
        f"{found['journal_offsets']}: {'balanced' if found['balanced'] else 'NOT BALANCED'}"
    )
    if not found["balanced"]:
        raise typer.Exit(1)


clock = typer.Typer(
    help="The embedded stack's rehearsal clock: move the services' time while they run.",
    no_args_is_help=True,
)
app.add_typer(clock, name="clock")

ClockVarDir = Annotated[
    Path | None,
    typer.Option(help="the var dir `carbon up` was given (default: CARBON_VAR_DIR, else var/)"),
]


@clock.command("set")
def clock_set(
    start: Annotated[
        datetime,
        typer.Argument(parser=aware_time, metavar="ISO", help="e.g. 2025-06-30T09:30+08:00"),
    ],
    var_dir: ClockVarDir = None,
    rate: Annotated[
        float,
        typer.Option(min=0.001, max=MAX_RATE, help="times real time, e.g. 60: a minute a second"),
    ] = 1.0,
) -> None:
    """Set the services' clock to ISO, which must carry its UTC offset; it runs on from there,
    `--rate` times as fast as real time.

    The services of `carbon up` see it at their next request, without a restart; so do the
    timestamps `carbon external ...` defaults to. Production never follows this clock.
    """
    path = rehearsal_clock_file(var_dir)
    set_clock_file(path, start=start, rate=rate)
    pace = "" if rate == 1 else f", {rate:g} x real time"
    typer.echo(f"{start.isoformat()} (rehearsal clock set in {path}{pace})")


@clock.command("show")
def clock_show(var_dir: ClockVarDir = None) -> None:
    """Print the services' time: the rehearsal clock's, or "real time" when none is set."""
    path = rehearsal_clock_file(var_dir)
    try:
        start = read_clock_file(path).start
    except FileNotFoundError:
        typer.echo("real time")
        return
    except (OSError, ValueError) as error:
        typer.echo(f"{path}: {error} (the services keep the time they had)", err=True)
        raise typer.Exit(1) from error
    now = Clock(follow=path).now().astimezone(start.tzinfo)
    typer.echo(f"{now.isoformat(timespec='seconds')} (rehearsal clock in {path})")


@clock.command("reset")
def clock_reset(var_dir: ClockVarDir = None) -> None:
    """Put the services back on real time: removes the rehearsal clock's file."""
    rehearsal_clock_file(var_dir).unlink(missing_ok=True)
    typer.echo("real time")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
