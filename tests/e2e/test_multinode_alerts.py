"""Quota and alerts on two `keyplane serve` nodes sharing PostgreSQL and Redis (the fixtures of
test_multinode.py, configured through its cluster_env fixture): one quota per key across both
nodes, and one alert per key per condition per window in all, whichever nodes saw it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pybit.exceptions import InvalidRequestError

from tests.alerts.conftest import WEBHOOK_SECRET, WebhookReceiver
from tests.e2e import test_multinode, test_quota_alerts
from tests.e2e.test_multinode import Cluster, metric, pybit

pytestmark = pytest.mark.postgres

# the fixtures are reused, not duplicated: two nodes (overridden cluster_env below) + receiver
cluster = test_multinode.cluster
hook = test_quota_alerts.hook


@pytest.fixture
def cluster_env(hook: WebhookReceiver) -> dict[str, str]:
    """Both nodes alert to the receiver; every unbound key is "90 days from expiry" (so the
    expiry sweep, every 0.3 s on both nodes, alerts at once)."""
    return {
        "KEYPLANE_WEBHOOK_URL": hook.url,
        "KEYPLANE_WEBHOOK_SECRET": WEBHOOK_SECRET.reveal(),
        "KEYPLANE_EXPIRY_ALERT_DAYS": "90",
        "KEYPLANE_ALERT_SWEEP_S": "0.3",
    }


def alerts_of(hook: WebhookReceiver, key: str, kind: str) -> list[dict[str, Any]]:
    return [a for a in hook.verified_alerts() if a["apiKey"] == key and a["kind"] == kind]


def test_two_nodes_share_one_quota_and_send_one_alert(
    cluster: Cluster, hook: WebhookReceiver
) -> None:
    """Quota 8 used alternately on nodes A and B: 8 pass in all, then 10006 on both; B counts
    the 6th request and A the 7th, both try to record quota.75, one alert is sent (the other
    node counts a duplicate). The expiry alert, swept by both nodes, also arrives once."""
    key, secret = cluster.new_key()
    cluster.service.update_key(key, daily_quota=8)
    nodes = [
        pybit(n.url, key, secret, max_retries=1, retry_codes={10002})
        for n in (cluster.a, cluster.b)
    ]
    for i in range(8):
        assert nodes[i % 2].get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
    for node in nodes:
        with pytest.raises(InvalidRequestError) as refused:
            node.get_wallet_balance(accountType="UNIFIED")
        assert refused.value.status_code == 10006
        assert refused.value.resp_headers["X-Bapi-Limit"] == "8"

    deadline = time.monotonic() + 5
    while not (alerts_of(hook, key, "quota.75") and alerts_of(hook, key, "expiry.soon")):
        assert time.monotonic() < deadline, "alerts not received"
        time.sleep(0.05)
    time.sleep(1.5)  # both nodes have swept several more times by now
    [quota_alert] = alerts_of(hook, key, "quota.75")
    assert quota_alert["details"]["used"] in (6, 7)
    [expiry_alert] = alerts_of(hook, key, "expiry.soon")
    assert expiry_alert["details"]["condition"] == "expiry.soon.90d"

    def total(name: str, **labels: str) -> float:
        return sum(metric(n, name, **labels) for n in (cluster.a, cluster.b))

    assert total("keyplane_quota_decisions_total", outcome="refused") == 2
    assert total("keyplane_alerts_recorded_total", kind="quota.75") == 1
    assert total("keyplane_alerts_duplicates_total", kind="quota.75") == 1
