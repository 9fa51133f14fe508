"""The anomaly guard on an in-memory KeyService: what each response does to the key, the audit
log and the notifiers, and that store and notifier failures never break it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from keyplane.alerts import Alert, AlertKind, DeliveryError, MemoryNotifier, SmtpNotifier
from keyplane.anomaly import (
    FLAG_ACTION,
    AnomalyDetector,
    AnomalyGuard,
    Response,
    default_rules,
    notifiers_from_settings,
    parse_responses,
)
from keyplane.auth.cache import KeyCache
from keyplane.clock import FrozenClock
from keyplane.http.metrics import Metrics
from keyplane.keys import KeyEncryptionKey, KeyStatus, Permissions
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.store import MemoryStore
from keyplane.usage import UsageEvent

T0 = 1_700_000_000_000
WITHDRAW = "/v5/asset/withdraw/create"


class FailingNotifier:
    name = "webhook"

    async def send(self, alert: Alert) -> None:
        raise DeliveryError("HTTP 500")


class FlakyStore(MemoryStore):
    """A MemoryStore whose writes (and network-history reads) fail while `down` is set."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("database unreachable")

    def append_audit(self, events: Any) -> Any:
        self._check()
        return super().append_audit(events)

    def save_key(self, key: Any, *, audit: Any = ()) -> None:
        self._check()
        super().save_key(key, audit=audit)

    def load_key_networks(self, key_ids: Any) -> Any:
        self._check()
        return super().load_key_networks(key_ids)

    def record_key_networks(self, rows: Any) -> None:
        self._check()
        super().record_key_networks(rows)


def usage(api_key: str, key_id: int, uid: int, *, ip: str, path: str, at_ms: int) -> UsageEvent:
    return UsageEvent(at_ms, api_key, key_id, uid, "POST", path, 200, 0, 80, 120, 900, ip, True)


class Setup:
    def __init__(self, responses: str = "", *, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.service = KeyService(self.store, KeyEncryptionKey.generate(), FrozenClock(T0))
        init = self.service.initialize()
        assert init is not None
        issued = self.service.create_key(
            init.account.uid, permissions=Permissions.parse("Wallet:Withdraw,Spot:SpotTrade")
        )
        self.key = issued.key
        self.cache = KeyCache(self.service.key_entry)
        self.memory = MemoryNotifier()
        self.guard = AnomalyGuard(
            self.service,
            self.cache,
            detector=AnomalyDetector(default_rules(parse_responses(responses))),
            notifiers=[self.memory],
            clock=FrozenClock(T0),
        )

    def request(self, ip: str, path: str = "/v5/order/create", at_ms: int = T0) -> None:
        key = self.key
        self.guard.emit(usage(key.api_key, key.id, key.uid, ip=ip, path=path, at_ms=at_ms))

    def tick(self) -> int:
        return anyio.run(self.guard.tick)

    def audit(self) -> list[tuple[str, str]]:
        records = self.store.list_audit(target=f"key:{self.key.api_key}")
        return [(r.event.action, r.event.actor) for r in records]

    def status(self) -> KeyStatus:
        return self.service.get_key(self.key.api_key).status


def test_withdraw_from_a_new_network_suspends_the_key() -> None:
    s = Setup()
    assert s.cache.load(s.key.api_key) is not None  # cached while active
    s.request("10.0.0.5")
    s.request("10.0.0.6")
    assert s.tick() == 2
    assert s.status() is KeyStatus.ACTIVE
    assert s.memory.sent == []

    s.request("203.0.113.9", WITHDRAW, T0 + 1000)
    s.tick()

    assert s.status() is KeyStatus.SUSPENDED
    actor = "system:sensitive_call_new_network"
    assert s.audit()[-2:] == [(FLAG_ACTION, actor), ("key.suspend", actor)]
    flag = s.store.list_audit(target=f"key:{s.key.api_key}")[-2].event.after
    assert flag["rule"] == "sensitive_call_new_network"
    assert flag["response"] == "suspend"
    assert flag["details"] == {"network": "203.0.113.0/24", "path": WITHDRAW}
    entry = s.cache.load(s.key.api_key)
    assert entry is not None
    assert entry.key.status is KeyStatus.SUSPENDED
    [alert] = s.memory.sent
    assert alert.kind is AlertKind.SUSPENDED
    assert alert.api_key == s.key.api_key
    assert "203.0.113.0/24" in alert.summary
    assert s.guard.suspensions == {"sensitive_call_new_network": 1}


def test_one_suspension_per_key() -> None:
    """Two withdraws from two new networks in one tick: one key.suspend, two flags."""
    s = Setup()
    s.request("10.0.0.5")
    s.request("203.0.113.9", WITHDRAW)
    s.request("198.51.100.7", WITHDRAW)
    s.tick()
    actions = [action for action, _ in s.audit()]
    assert actions.count(FLAG_ACTION) == 2
    assert actions.count("key.suspend") == 1
    assert [a.kind for a in s.memory.sent] == [AlertKind.SUSPENDED, AlertKind.ANOMALY]
    assert s.guard.suspensions == {"sensitive_call_new_network": 1}


def test_alert_response_only_alerts() -> None:
    s = Setup("sensitive_call_new_network=alert")
    s.request("10.0.0.5")
    s.request("203.0.113.9", WITHDRAW)
    s.tick()
    assert s.status() is KeyStatus.ACTIVE
    assert [a for a, _ in s.audit()].count("key.suspend") == 0
    assert s.audit()[-1] == (FLAG_ACTION, "system:sensitive_call_new_network")
    [alert] = s.memory.sent
    assert alert.kind is AlertKind.ANOMALY


def test_failed_signature_burst_alerts_a_suspected_leak() -> None:
    s = Setup()
    for i in range(20):
        k = s.key
        path = "/v5/account/wallet-balance"
        row = (T0 + i, k.api_key, k.id, k.uid, "GET", path, 401, 10004, 0, 90, 500)
        s.guard.emit(UsageEvent(*row, "198.51.100.7", False))
    s.tick()
    [alert] = s.memory.sent
    assert alert.kind is AlertKind.LEAK_SUSPECTED
    assert s.status() is KeyStatus.ACTIVE


def test_record_response_only_audits() -> None:
    s = Setup("sensitive_call_new_network=record")
    s.request("10.0.0.5")
    s.request("203.0.113.9", WITHDRAW)
    s.tick()
    assert s.status() is KeyStatus.ACTIVE
    assert s.audit()[-1] == (FLAG_ACTION, "system:sensitive_call_new_network")
    assert s.memory.sent == []


def test_notifier_failure_is_counted_not_raised() -> None:
    s = Setup()
    s.guard.dispatcher.notifiers = [FailingNotifier(), s.memory]
    s.request("10.0.0.5")
    s.request("203.0.113.9", WITHDRAW)
    s.tick()
    assert s.status() is KeyStatus.SUSPENDED
    assert s.guard.dispatcher.failed == {("webhook", "key.suspended"): 1}
    assert s.guard.dispatcher.sent == {("memory", "key.suspended"): 1}
    metrics = Metrics()
    metrics.watch_anomaly(s.guard.stats)
    metrics.watch_alerts(s.guard.dispatcher.stats)
    text = metrics.render().decode()
    assert 'keyplane_alerts_failed_total{kind="key.suspended",notifier="webhook"} 1.0' in text
    assert 'keyplane_anomaly_suspensions_total{rule="sensitive_call_new_network"} 1.0' in text
    assert (
        'keyplane_anomaly_flags_total{response="suspend",rule="sensitive_call_new_network"} 1.0'
        in text
    )


def test_store_error_is_retried_on_the_next_tick() -> None:
    store = FlakyStore()
    s = Setup(store=store)
    s.request("10.0.0.5")
    s.request("203.0.113.9", WITHDRAW)
    store.down = True
    s.tick()
    assert s.status() is KeyStatus.ACTIVE
    assert s.memory.sent == []
    held = s.cache.load(s.key.api_key)  # this node refuses the key already (10007)
    assert held is not None
    assert held.key.status is KeyStatus.SUSPENDED
    store.down = False
    s.tick()
    assert s.status() is KeyStatus.SUSPENDED
    fresh = s.cache.load(s.key.api_key)  # released: the store's record decides again
    assert fresh is not None
    assert fresh.key.status is KeyStatus.SUSPENDED
    s.service.resume_key(s.key.api_key)
    resumed = s.cache.load(s.key.api_key)
    assert resumed is not None
    assert resumed.key.status is KeyStatus.ACTIVE
    assert [a for a, _ in s.audit()].count(FLAG_ACTION) == 1
    assert len(s.memory.sent) == 1


def test_no_secret_in_audit_or_alerts() -> None:
    s = Setup()
    secret_ciphertext = s.store.find_key(s.key.api_key)
    assert secret_ciphertext is not None
    s.request("10.0.0.5")
    s.request("203.0.113.9", WITHDRAW)
    s.tick()
    dumped = repr([r.event for r in s.store.list_audit()]) + repr(s.memory.sent)
    assert "secret" not in dumped.lower()


def test_parse_responses() -> None:
    assert parse_responses("") == {}
    assert parse_responses(" new_network=SUSPEND , rate_spike=record") == {
        "new_network": Response.SUSPEND,
        "rate_spike": Response.RECORD,
    }
    for bad in ("new_network", "new_network=ban", "nope=alert"):
        with pytest.raises(ValueError, match=r"anomaly|unknown"):
            parse_responses(bad)


def test_settings_refuse_bad_anomaly_and_notifier_configuration() -> None:
    with pytest.raises(ValidationError, match="unknown anomaly rule"):
        Settings(anomaly_responses="nope=alert")
    assert Settings(anomaly_responses="new_network=suspend").anomaly_detection
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        notifiers_from_settings(Settings(webhook_url="http://127.0.0.1:9/hook"))
    with pytest.raises(ValueError, match="alert_email_to"):
        notifiers_from_settings(Settings(smtp_url="smtp://mail.example:25"))
    settings = Settings(
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret="whsec_x",
        smtp_url="smtp+starttls://bot:p%40ss@mail.example",
        alert_email_from="keyplane@example.com",
        alert_email_to="ops@example.com, sec@example.com",
    )
    webhook, mail = notifiers_from_settings(settings)
    assert webhook.name == "webhook"
    assert isinstance(mail, SmtpNotifier)
    assert (mail.host, mail.port, mail.recipients) == (
        "mail.example",
        587,
        ("ops@example.com", "sec@example.com"),
    )
    assert "p@ss" not in repr(settings) + repr(mail)
