"""Settings: one pydantic-settings object, env prefix KEYPLANE_, each also a `serve` flag."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyplane.keys.encryption import KeyEncryptionKey
from keyplane.ratelimit.protocol import Rate, parse_rate
from keyplane.secret import Secret

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "load_kek", "sqlite_path"]

DEFAULT_DATABASE_URL = "sqlite:///./keyplane.db"


class Settings(BaseSettings):
    """Runtime configuration.

    database_url: SQLAlchemy URL (KEYPLANE_DATABASE_URL); SQLite file by default.
    kek: base64 of 32 bytes (KEYPLANE_KEK); on SQLite, a 0600 file beside the database is
        created when unset. trusted_proxies: IPs/CIDRs whose X-Forwarded-For is believed.
    max_body_bytes: int, bytes; larger bodies get retCode 10001 with HTTP 413.
    cache_poll_ms: int, ms between checks of the store revision (key-cache invalidation).
    ip_limit: "600/5s" form or "off" (KEYPLANE_IP_LIMIT); over it HTTP 403 for ip_ban_seconds.
    ratelimit_fail_open_reads / _writes: what happens when the limiter backend is down; the
        replay guard's store (keys with replay_guard on) follows the same two settings.
    redis_url: redis://host:port/db (KEYPLANE_REDIS_URL); when set, rate limits and the replay
        guard's signatures are kept in Redis and so shared by every node; unset, in process
        memory (one node).
    ws_max_connections_per_key: authenticated WebSocket connections (/v5/private, /v5/trade)
        one api key may hold at once (KEYPLANE_WS_MAX_CONNECTIONS_PER_KEY); beyond it auth fails.
    ws_auth_timeout_s: float, seconds a /v5/private or /v5/trade connection may stay open
        without a successful auth frame (KEYPLANE_WS_AUTH_TIMEOUT_S, default 30); then it gets
        a failure reply for op "auth" and is closed (1008). Bybit documents no deadline of its
        own for unauthenticated private connections, only that an idle one is cut after
        10 minutes and that the shortest `max_active_time` it accepts is 30 s (Bybit V5
        "WebSocket Connect"). 30 s is that floor: pybit authenticates as the socket opens and
        ccxt on its first private watch, well inside it, while a connection that never
        authenticates would otherwise hold a socket and a task until the client leaves.
    upstream_url: base URL (KEYPLANE_UPSTREAM_URL); when set, keyplane is a gateway: every
        policy route outside /v5/user/* is forwarded there after keyplane's own checks.
    upstream_kind: "generic" (trusted X-Keyplane-* identity headers) or "bybit" (re-signed
        with the stored upstream credentials) (KEYPLANE_UPSTREAM_KIND).
    upstream_timeout_s: float, seconds for each of connect/read/write/pool to the upstream.
    gateway_max_response_bytes: int, bytes (KEYPLANE_GATEWAY_MAX_RESPONSE_BYTES, default
        16 MiB); an upstream body longer than this (after content decoding) is not read further
        and the client gets retCode 10016. Bybit pages its lists (at most 1000 items a page),
        so its replies stay far below the default, which only stops a broken or hostile
        upstream from filling the gateway's memory.
    audit_retention_days: int, days audit rows and revoked keys are kept before `keyplane
        maintenance purge` deletes them (KEYPLANE_AUDIT_RETENTION_DAYS).
    usage_log: bool, one usage row per request that names an api key (KEYPLANE_USAGE_LOG).
    usage_retention_days: int, days usage rows are kept before `keyplane maintenance purge`
        deletes them (KEYPLANE_USAGE_RETENTION_DAYS).
    alert_retention_days: int, days alert_log rows are kept before `keyplane maintenance
        purge` deletes them (KEYPLANE_ALERT_RETENTION_DAYS, default 90; at least 2, so a
        quota or rate alert's one-day window is over before its row goes and the alert is
        never sent twice; expiry rows also stay until the key's expiry is that old).
    usage_queue_max: int, rows held in memory; beyond it rows go straight to the spill file.
    usage_flush_ms: int, ms between usage flushes; usage_batch_rows: int, rows per store write
        (and the queue length that triggers an early flush).
    usage_spill_path: the JSON-lines file rows spill to while the database is down (default:
        keyplane-usage.spill.jsonl beside a SQLite database, else in the working directory).
    anomaly_detection: bool, run the anomaly rules over the usage stream and carry out their
        responses (keyplane.anomaly.guard) (KEYPLANE_ANOMALY_DETECTION).
    anomaly_responses: per-rule response overrides, "new_network=suspend,rate_spike=record"
        (KEYPLANE_ANOMALY_RESPONSES); rules: rate_spike, new_network,
        sensitive_call_new_network, failed_signature_burst; responses: record, alert, suspend.
    webhook_url / webhook_secret: alerts POSTed as signed JSON (KEYPLANE_WEBHOOK_URL,
        KEYPLANE_WEBHOOK_SECRET; the secret is required with the URL).
    smtp_url: "smtp://user:pass@host:port" or "smtp+starttls://..." (KEYPLANE_SMTP_URL);
        alerts emailed from alert_email_from to alert_email_to (comma-separated addresses).
    quota_alert_fraction: float in (0, 1], share of a key's daily quota at which one quota.75
        alert is sent per key per UTC day (KEYPLANE_QUOTA_ALERT_FRACTION, default 0.75).
    rate_alert_fraction: float in (0, 1], share of a rate budget a request must have used for
        its second to count as "hot" (KEYPLANE_RATE_ALERT_FRACTION, default 0.75);
        rate_alert_sustain_s: int seconds, consecutive hot seconds of one key and route before
        one rate.75 alert per UTC day (KEYPLANE_RATE_ALERT_SUSTAIN_S, default 60).
    expiry_alert_days: "14,7,1": days before an unbound key's expiry at which it alerts, the
        tightest threshold passed only (KEYPLANE_EXPIRY_ALERT_DAYS); "" turns them off.
    alert_sweep_s: float seconds between expiry sweeps; one also runs at start
        (KEYPLANE_ALERT_SWEEP_S, default 600).
    """

    model_config = SettingsConfigDict(env_prefix="KEYPLANE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    kek: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    trusted_proxies: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    cache_poll_ms: int = Field(default=200, gt=0)
    last_used_flush_ms: int = Field(default=1000, gt=0)
    ip_limit: str = "600/5s"
    ip_ban_seconds: float = Field(default=10.0, ge=0)
    ratelimit_fail_open_reads: bool = True
    ratelimit_fail_open_writes: bool = False
    redis_url: SecretStr | None = None
    ws_max_connections_per_key: int = Field(default=20, gt=0)
    ws_auth_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    upstream_url: str | None = None
    upstream_kind: Literal["generic", "bybit"] = "generic"
    upstream_timeout_s: float = Field(default=10.0, gt=0, le=300)
    gateway_max_response_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    audit_retention_days: int = Field(default=90, ge=1)
    usage_log: bool = True
    usage_retention_days: int = Field(default=30, ge=1)
    alert_retention_days: int = Field(default=90, ge=2)
    usage_queue_max: int = Field(default=100_000, gt=0)
    usage_flush_ms: int = Field(default=1000, gt=0)
    usage_batch_rows: int = Field(default=5000, gt=0)
    usage_spill_path: Path | None = None
    anomaly_detection: bool = True
    anomaly_responses: str = ""
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    smtp_url: SecretStr | None = None
    alert_email_from: str | None = None
    alert_email_to: str | None = None
    quota_alert_fraction: float = Field(default=0.75, gt=0, le=1)
    rate_alert_fraction: float = Field(default=0.75, gt=0, le=1)
    rate_alert_sustain_s: int = Field(default=60, ge=1)
    expiry_alert_days: str = "14,7,1"
    alert_sweep_s: float = Field(default=600.0, gt=0)

    @field_validator("expiry_alert_days")
    @classmethod
    def _check_expiry_alert_days(cls, value: str) -> str:
        _parse_days(value)
        return value

    def expiry_days(self) -> tuple[int, ...]:
        """expiry_alert_days as ints, e.g. (14, 7, 1); () when empty."""
        return _parse_days(self.expiry_alert_days)

    @field_validator("anomaly_responses")
    @classmethod
    def _check_anomaly_responses(cls, value: str) -> str:
        from keyplane.anomaly.guard import parse_responses  # here: keyplane.anomaly imports more

        parse_responses(value)
        return value

    @field_validator("ip_limit")
    @classmethod
    def _check_ip_limit(cls, value: str) -> str:
        if value.strip().lower() != "off":
            parse_rate(value)
        return value

    def ip_rate(self) -> Rate | None:
        """The per-IP budget, None when ip_limit is "off"."""
        return None if self.ip_limit.strip().lower() == "off" else parse_rate(self.ip_limit)

    def usage_spill_file(self) -> Path:
        """usage_spill_path, else keyplane-usage.spill.jsonl beside the SQLite database file,
        else in the working directory."""
        if self.usage_spill_path is not None:
            return self.usage_spill_path
        db = sqlite_path(self.database_url)
        directory = db.parent if db is not None else Path()
        return directory / "keyplane-usage.spill.jsonl"

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value


def _parse_days(text: str) -> tuple[int, ...]:
    """ "14,7,1" -> (14, 7, 1); raises ValueError for an item that is not a whole number >= 1."""
    days: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"expiry alert days must be whole numbers >= 1, got {item!r}")
        days.append(int(item))
    return tuple(days)


def sqlite_path(database_url: str) -> Path | None:
    """The file of a sqlite:/// URL, or None for other databases (and in-memory SQLite)."""
    for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
        if database_url.startswith(prefix):
            rest = database_url[len(prefix) :].split("?", 1)[0]
            return Path(rest) if rest and rest != ":memory:" else None
    return None


def load_kek(settings: Settings) -> KeyEncryptionKey:
    """The key-encryption key: KEYPLANE_KEK, else (SQLite only) a 0600 file `<db>.kek`.

    Raises ValueError when KEYPLANE_KEK is malformed, or unset for a non-SQLite database
    (several nodes must share one KEK, so it is never invented per node).
    """
    if settings.kek is not None:
        return KeyEncryptionKey.from_base64(Secret(settings.kek.get_secret_value()))
    path = sqlite_path(settings.database_url)
    if path is None:
        raise ValueError(
            "KEYPLANE_KEK (base64 of 32 bytes) must be set for this database; every node of "
            "one deployment shares it. Make one with: keyplane kek generate"
        )
    return KeyEncryptionKey.load_or_create_file(path.with_suffix(path.suffix + ".kek"))
