"""Daily quotas and quota/rate/expiry alerts as a user meets them: a real server, pybit, a
local webhook receiver and a local SMTP server (aiosmtpd), `keyplane keys update --daily-quota`
and `keyplane alerts list` from the command line.

- a key with --daily-quota 8: requests 1..8 pass, the 9th is 10006 with X-Bapi-Limit 8,
  X-Bapi-Limit-Status 0 and X-Bapi-Limit-Reset-Timestamp at the next 00:00 UTC, which pybit
  sleeps until; crossing 75% (the 6th request) sends exactly one signed webhook alert;
- the same alert by email;
- expiry alerts for unbound keys on a controllable clock: only the tightest threshold, then the
  next one, re-armed when the key is saved again without IPs;
- rate.75: a key at >= 75% of a rate budget for the sustain period alerts once;
- after a restart the in-memory count continues from the usage log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pybit._http_manager
import pytest
from aiosmtpd.controller import Controller
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from keyplane.clock import FrozenClock, SystemClock
from keyplane.keys import DAY_MS, IpAllowlist, RateOverrides
from keyplane.testing import free_port, running_server
from tests.alerts import conftest as alerts_conftest
from tests.alerts.conftest import WEBHOOK_SECRET, Mailbox, WebhookReceiver

from .conftest import Server, serving
from .test_cli import keyplane, keyplane_json

QUOTA = 8


def session(url: str, api_key: str, secret: str, **options: Any) -> HTTP:
    """pybit on url that reports 10006 at once instead of sleeping (unless options say; an
    empty retry_codes would mean pybit's defaults)."""
    options.setdefault("retry_codes", {10002})
    s = HTTP(api_key=api_key, api_secret=secret, max_retries=1, retry_delay=0, **options)
    s.endpoint = url
    return s


def next_midnight_ms() -> int:
    now = int(time.time() * 1000)
    return now - now % DAY_MS + DAY_MS


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def kinds(receiver: WebhookReceiver, kind: str) -> list[dict[str, Any]]:
    """Verified webhook alerts of one kind."""
    return [a for a in receiver.verified_alerts() if a["kind"] == kind]


#: the local webhook receiver of the notifier contract suite (tests/alerts/conftest.py), reused
hook = alerts_conftest.webhook_receiver


def webhook_settings(receiver: WebhookReceiver) -> dict[str, Any]:
    return {"webhook_url": receiver.url, "webhook_secret": WEBHOOK_SECRET.reveal()}


@pytest.fixture
def hooked(tmp_path: Path, hook: WebhookReceiver) -> Iterator[Server]:
    """A server whose alerts go to the local webhook receiver (anomaly detection off: the
    notifiers must work without it)."""
    with serving(tmp_path, anomaly_detection=False, **webhook_settings(hook)) as server:
        yield server


class TestDailyQuota:
    def test_quota_spent_is_10006_until_midnight_with_one_alert(
        self, hooked: Server, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--daily-quota 8 via the CLI: 8 requests pass, the 9th is 10006 with the quota
        headers (reset at next 00:00 UTC), and crossing 75% sent exactly one webhook alert."""
        key, secret = hooked.new_key()
        env = {"KEYPLANE_KEK": hooked.kek_b64}
        shown = keyplane_json(
            "keys", "update", key, "--daily-quota", str(QUOTA), db=hooked.db_url, env=env
        )
        assert shown["dailyQuota"] == QUOTA
        s = session(hooked.url, key, secret)
        for _ in range(QUOTA):
            assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        with pytest.raises(InvalidRequestError) as refused:
            s.get_wallet_balance(accountType="UNIFIED")
        assert refused.value.status_code == 10006
        headers = refused.value.resp_headers
        assert headers["X-Bapi-Limit"] == str(QUOTA)
        assert headers["X-Bapi-Limit-Status"] == "0"
        assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) == next_midnight_ms()

        # pybit's own back-off reads that header: it would sleep until midnight UTC
        slept: list[float] = []
        monkeypatch.setattr(pybit._http_manager.time, "sleep", slept.append)
        with pytest.raises(FailedRequestError):
            session(hooked.url, key, secret, retry_codes={10006}).get_wallet_balance(
                accountType="UNIFIED"
            )
        monkeypatch.undo()
        assert slept
        assert abs(slept[0] - (next_midnight_ms() / 1000 - time.time())) < 5

        time.sleep(1.5)  # every request sent; give the monitor time to send anything more
        [alert] = kinds(hook, "quota.75")
        assert len(hook.requests) == 1
        assert alert["apiKey"] == key
        assert alert["details"]["used"] == 6  # ceil(0.75 * 8)
        assert alert["details"]["quota"] == QUOTA
        listed = keyplane_json("alerts", "list", "--key", key, db=hooked.db_url, env=env)
        assert [(a["kind"], a["apiKey"]) for a in listed] == [("quota.75", key)]

    def test_keys_without_quota_are_not_counted(self, hooked: Server) -> None:
        """A key without a quota is never refused for it and never alerts."""
        key, secret = hooked.new_key()
        s = session(hooked.url, key, secret)
        for _ in range(12):
            assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0

    def test_restart_continues_the_days_count_from_the_usage_log(self, tmp_path: Path) -> None:
        """In memory, a restarted server seeds today's count from the usage log: a key that
        used 5 of 6 gets one more request after the restart, then 10006."""
        with serving(tmp_path / "one") as first:
            key, secret = first.new_key()
            first.service.update_key(key, daily_quota=6)
            s = session(first.url, key, secret)
            for _ in range(5):
                assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
            db_path, kek = first.db_path, first.kek_b64
        from keyplane.http.app import create_app
        from keyplane.settings import Settings

        settings = Settings(database_url=f"sqlite:///{db_path}", kek=kek)
        with running_server(create_app(settings)) as url:
            s = session(url, key, secret)
            assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
            with pytest.raises(InvalidRequestError) as refused:
                s.get_wallet_balance(accountType="UNIFIED")
        assert refused.value.status_code == 10006


class TestEmailAlert:
    def test_quota_alert_by_email(self, tmp_path: Path) -> None:
        """With KEYPLANE_SMTP_URL the quota.75 alert arrives as one email at a local SMTP
        server (aiosmtpd), subject "[keyplane] quota.75: ..."."""
        mailbox = Mailbox()
        port = free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            with serving(
                tmp_path,
                smtp_url=f"smtp://127.0.0.1:{port}",
                alert_email_from="keyplane@example.test",
                alert_email_to="ops@example.test",
            ) as server:
                key, secret = server.new_key()
                server.service.update_key(key, daily_quota=4)
                s = session(server.url, key, secret)
                for _ in range(4):
                    s.get_wallet_balance(accountType="UNIFIED")
                wait_for(lambda: len(mailbox.messages) >= 1)
                time.sleep(1.0)
        finally:
            controller.stop()
        [mail] = mailbox.messages
        assert mail["Subject"].startswith(f"[keyplane] quota.75: key {key} used 3 of its 4")
        assert mail["To"] == "ops@example.test"


class TestExpiryAlerts:
    def test_tightest_threshold_then_next_then_rearmed_by_resave(
        self, tmp_path: Path, hook: WebhookReceiver
    ) -> None:
        """Clock at 85 days after creation (5 left): the sweep at start sends expiry.7d only;
        at 89.5 days expiry.1d; saving the key without IPs again (a new 90 days) re-arms it.
        A bound key never alerts."""
        now = SystemClock().now_ms()
        clock = FrozenClock(now + 85 * DAY_MS)
        with serving(tmp_path, clock=clock, alert_sweep_s=0.2, **webhook_settings(hook)) as server:
            key, _ = server.new_key()
            bound, _ = server.new_key(ips="10.0.0.0/8")

            def ours() -> list[dict[str, Any]]:
                return [a for a in kinds(hook, "expiry.soon") if a["apiKey"] == key]

            wait_for(lambda: len(ours()) >= 1)
            time.sleep(0.6)  # a few more sweeps: nothing new
            assert [a["details"]["condition"] for a in ours()] == ["expiry.soon.7d"]
            clock.set(now + 89 * DAY_MS + DAY_MS // 2)
            wait_for(lambda: len(ours()) >= 2)
            server.service.update_key(key, ips=IpAllowlist.parse("*"))  # a new 90 days
            wait_for(lambda: len(ours()) >= 3)
            time.sleep(0.6)
        conditions = [(a["details"]["condition"], a["details"]["windowMs"]) for a in ours()]
        expires = now + 90 * DAY_MS
        assert [c for c, _ in conditions] == ["expiry.soon.7d", "expiry.soon.1d", "expiry.soon.1d"]
        assert abs(conditions[0][1] - expires) < 60_000
        assert conditions[2][1] > conditions[1][1]  # the re-saved key's new expiry
        assert not [a for a in hook.verified_alerts() if a["apiKey"] == bound]


class TestRateAlert:
    def test_sustained_75_percent_of_a_budget_alerts_once(
        self, tmp_path: Path, hook: WebhookReceiver
    ) -> None:
        """wallet-balance limited to 4/s for the key; 3 requests in each of 5 consecutive
        seconds (each second's third request leaves 1 of 4: 75% used): with a 2 s sustain,
        one rate.75 alert for that route."""
        with serving(tmp_path, rate_alert_sustain_s=2, **webhook_settings(hook)) as server:
            key, secret = server.new_key()
            server.service.update_key(
                key, rate_limits=RateOverrides.parse("account/wallet-balance=4")
            )
            s = session(server.url, key, secret)
            time.sleep(1.3 - time.time() % 1)  # start at .3 of a wall second
            start = time.monotonic()
            for second in range(5):
                time.sleep(max(0.0, start + second - time.monotonic()))
                for _ in range(3):
                    assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
            wait_for(lambda: len(kinds(hook, "rate.75")) >= 1)
            time.sleep(1.0)
        [alert] = kinds(hook, "rate.75")
        assert alert["apiKey"] == key
        assert alert["details"]["path"] == "/v5/account/wallet-balance"
        assert alert["details"]["condition"] == "rate.75:/v5/account/wallet-balance:"

    def test_evenly_spread_80_percent_alerts(self, tmp_path: Path, hook: WebhookReceiver) -> None:
        """wallet-balance limited to 5/s; 4 requests a second, 250 ms apart, for 5 seconds
        (GCRA always has burst room left, so no single request looks near the limit, yet the
        key runs at 80%): with a 2 s sustain, one rate.75 alert."""
        with serving(tmp_path, rate_alert_sustain_s=2, **webhook_settings(hook)) as server:
            key, secret = server.new_key()
            server.service.update_key(
                key, rate_limits=RateOverrides.parse("account/wallet-balance=5")
            )
            s = session(server.url, key, secret)
            time.sleep(1.05 - time.time() % 1)  # start just after a wall second
            start = time.monotonic()
            for step in range(20):
                time.sleep(max(0.0, start + step * 0.25 - time.monotonic()))
                reply = s.get_wallet_balance(accountType="UNIFIED")
                assert reply["retCode"] == 0
            wait_for(lambda: len(kinds(hook, "rate.75")) >= 1)
        [alert] = kinds(hook, "rate.75")
        assert alert["apiKey"] == key
        assert alert["details"]["path"] == "/v5/account/wallet-balance"


def test_alerts_list_cli_table_and_json(hooked: Server) -> None:
    """`keyplane alerts list` prints a table; --since filters; --json is one document."""
    key, secret = hooked.new_key()
    hooked.service.update_key(key, daily_quota=2)
    s = session(hooked.url, key, secret)
    for _ in range(2):
        s.get_wallet_balance(accountType="UNIFIED")
    env = {"KEYPLANE_KEK": hooked.kek_b64}
    wait_for(lambda: bool(keyplane_json("alerts", "list", db=hooked.db_url, env=env)))
    table = keyplane("alerts", "list", "--since", "1h", db=hooked.db_url, env=env)
    assert table.returncode == 0, table.stderr
    assert "quota.75" in table.stdout
    assert key in table.stdout
    [row] = keyplane_json("alerts", "list", "--since", "1h", db=hooked.db_url, env=env)
    assert row["condition"] == "quota.75"
    assert row["at"].startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    bad = keyplane("alerts", "list", "--since", "soon", db=hooked.db_url, env=env)
    assert bad.returncode == 1
