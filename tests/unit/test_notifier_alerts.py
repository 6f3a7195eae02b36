"""Alerts from Alertmanager (POST /alerts, webhook payload version 4) become notices to the
Bureau, delivered like any other: once per alert, state and start, whatever Alertmanager
resends; bad payloads are refused with the reason."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from notifier import store
from notifier.domain.alerts import Alert, alert_notice
from tests.unit.support import Harness

RUNBOOK = "deploy/runbooks/CarbonServiceDown.md"


def alert(status: str = "firing", **changes: Any) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 sends it."""
    return {
        "status": status,
        "labels": {
            "alertname": "CarbonServiceDown",
            "severity": "critical",
            "job": "registry",
            "instance": "registry:8003",
        },
        "annotations": {
            "summary": "registry is down (registry:8003 not scraped for 1m)",
            "runbook_url": RUNBOOK,
        },
        "startsAt": "2026-11-27T10:00:00.123Z",
        "endsAt": "2026-11-27T10:07:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": "4a1b2c3d4e5f6071",
    } | changes


def notification(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="CarbonServiceDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "notifier",
        "groupLabels": {"alertname": "CarbonServiceDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


async def post(notifier: Harness, body: Any, role: str = "regulator") -> Any:
    headers = notifier.token("regulator") if role == "regulator" else {}
    if role == "entity":
        headers = notifier.token("entity", credit_code="91310115MA1K4C8N0W")
    async with notifier.client() as client:
        return await client.post("/alerts", json=body, headers=headers)


async def bureau_notices(notifier: Harness) -> list[dict[str, Any]]:
    async with notifier.client() as client:
        answer = await client.get(
            "/notifications",
            params={"recipient_type": "bureau"},
            headers=notifier.token("regulator"),
        )
    assert answer.status_code == 200, answer.text
    notices: list[dict[str, Any]] = answer.json()
    return notices


async def test_a_firing_alert_becomes_a_notice_to_the_bureau(notifier: Harness) -> None:
    answer = await post(notifier, notification(alert()))

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "recorded": 1}
    [notice] = await bureau_notices(notifier)
    assert (notice["recipient_type"], notice["recipient_id"]) == ("bureau", "bureau")
    assert notice["credit_code"] is None
    assert notice["event_type"] == "alert.firing"
    assert notice["subject"] == (
        "[FIRING critical] CarbonServiceDown: registry is down (registry:8003 not scraped for 1m)"
    )
    message = notice["message"]
    assert "Alert CarbonServiceDown is firing (severity critical)." in message
    assert f"Runbook: {RUNBOOK}" in message
    assert "Since: 2026-11-27 18:00:00 CST" in message  # the policy's time zone
    assert "Labels: instance=registry:8003, job=registry" in message


async def test_resends_are_told_once_and_the_resolution_once_more(notifier: Harness) -> None:
    firing = notification(alert())
    assert (await post(notifier, firing)).json() == {"received": 1, "recorded": 1}
    # Alertmanager repeats the group (repeat_interval, a retried send): nothing new.
    assert (await post(notifier, copy.deepcopy(firing))).json() == {"received": 1, "recorded": 0}
    resolved = notification(alert("resolved"), status="resolved")
    assert (await post(notifier, resolved)).json() == {"received": 1, "recorded": 1}
    assert (await post(notifier, resolved)).json() == {"received": 1, "recorded": 0}
    # The same alert firing again later starts anew.
    again = notification(alert(startsAt="2026-11-27T11:00:00Z"))
    assert (await post(notifier, again)).json() == {"received": 1, "recorded": 1}

    notices = await bureau_notices(notifier)
    assert [n["event_type"] for n in notices] == ["alert.firing", "alert.resolved", "alert.firing"]
    assert "Resolved: 2026-11-27 18:07:00 CST" in notices[1]["message"]


async def test_each_alert_of_a_group_is_its_own_notice(notifier: Harness) -> None:
    other = alert(
        labels={"alertname": "CarbonServiceDown", "severity": "critical", "job": "notifier"},
        fingerprint="99aa",
    )
    answer = await post(notifier, notification(alert(), other))
    assert answer.json() == {"received": 2, "recorded": 2}
    assert len(await bureau_notices(notifier)) == 2


async def test_a_notice_of_an_alert_goes_to_the_bureaus_subscriptions(notifier: Harness) -> None:
    async with notifier.client() as client:
        subscribed = await client.post(
            "/subscriptions",
            json={"channel": "email", "address": "ops@example.com"},
            headers=notifier.token("regulator"),
        )
    assert subscribed.status_code == 201, subscribed.text

    await post(notifier, notification(alert()))
    await post(notifier, notification(alert()))

    [delivery] = await notifier.read(
        store.list_deliveries, status=None, recipient_type="bureau", recipient_id=None, limit=10
    )
    assert (delivery.status, delivery.channel) == ("pending", "email")
    assert delivery.subscription_id == subscribed.json()["id"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"version": "3"}, "version"),
        ({"alerts": []}, "alerts"),
        ({"status": "pending"}, "status"),
        ({"alerts": [alert(labels={"severity": "critical"})]}, "labels"),
        ({"alerts": [alert(startsAt="2026-11-27T10:00:00")]}, "startsAt"),
        ({"alerts": [alert(fingerprint="")]}, "fingerprint"),
        ({"alerts": [alert(status="silenced")]}, "status"),
    ],
    ids=["version", "no alerts", "status", "no alertname", "naive start", "fingerprint", "state"],
)
async def test_a_malformed_notification_is_422_with_where(
    notifier: Harness, change: dict[str, Any], where: str
) -> None:
    answer = await post(notifier, notification(alert()) | change)

    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert any(where in detail["loc"] for detail in error["details"]), error
    assert await bureau_notices(notifier) == []


async def test_only_the_bureaus_operators_may_post_alerts(notifier: Harness) -> None:
    assert (await post(notifier, notification(alert()), role="none")).status_code == 401
    refused = await post(notifier, notification(alert()), role="entity")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert await bureau_notices(notifier) == []


def test_an_alerts_notice_id_depends_on_its_fingerprint_start_and_state() -> None:
    start = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    firing = Alert(name="A", status="firing", fingerprint="f1", starts_at=start)
    same_instant = Alert(name="A", status="firing", fingerprint="f1", starts_at=start.astimezone())
    assert firing.event_id == same_instant.event_id
    assert len(firing.event_id) == 36
    others = [
        Alert(name="A", status="resolved", fingerprint="f1", starts_at=start),
        Alert(name="A", status="firing", fingerprint="f2", starts_at=start),
        Alert(name="A", status="firing", fingerprint="f1", starts_at=start.replace(minute=1)),
    ]
    assert len({firing.event_id, *(other.event_id for other in others)}) == 4


def test_a_long_summary_is_cut_to_the_subjects_length() -> None:
    long = Alert(
        name="A",
        status="firing",
        fingerprint="f",
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
        summary="x" * 500,
    )
    notice = alert_notice(long, timezone="Asia/Shanghai")
    assert len(notice.subject) == 200 and notice.subject.endswith("…")
    assert "x" * 500 in notice.message
    assert "Runbook: (none given)" in notice.message
