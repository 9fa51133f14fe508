"""The exchange credentials a Bybit-kind gateway signs with: stored encrypted, used masked.

`keyplane upstream set-credentials` stores one row (name "default") in the store's
upstream_credentials table. The HMAC secret, or the PEM RSA private key, is sealed with AES-256-GCM
under the key-encryption key (keyplane.keys.encryption), with "keyplane-upstream:<name>:<api_key>"
as the associated data, so the blob only decrypts on its own row. Plaintext lives only inside
`Secret` and the prepared signer, whose reprs are masked; nothing here logs or echoes it.

Signing follows the Bybit V5 guide, "Authentication for HTTP requests": X-BAPI-SIGN over
timestamp + api_key + recv_window + payload (raw query string for GET, raw body for POST),
HMAC-SHA256 lowercase hex or RSASSA-PKCS1-v1_5/SHA-256 standard base64 (keyplane.signing).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import rsa

from keyplane.audit import AuditAction, AuditEvent
from keyplane.errors import ParameterError
from keyplane.keys.encryption import KeyEncryptionKey
from keyplane.secret import Secret
from keyplane.signing import HmacKey, load_rsa_private_key, sign_rsa, string_to_sign
from keyplane.store.memory import MAX_API_KEY_LENGTH
from keyplane.store.protocol import DEFAULT_UPSTREAM, Store, UpstreamCredentialsRecord

__all__ = [
    "KeyType",
    "UpstreamCredentials",
    "UpstreamSigner",
    "clear_upstream_credentials",
    "load_upstream_credentials",
    "mask_api_key",
    "save_upstream_credentials",
]

KeyType = Literal["hmac", "rsa"]

_API_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")
_SECRET_CHARS = frozenset(string.printable) - frozenset(string.whitespace)


@dataclass(frozen=True, slots=True)
class UpstreamCredentials:
    """Decrypted upstream credentials.

    api_key: the exchange api key (public). key_type: "hmac" | "rsa". secret: the HMAC secret
    or the PEM RSA private key, masked. set_at_ms: int, ms since epoch.
    """

    api_key: str
    key_type: KeyType
    secret: Secret[str] = field(repr=False)
    set_at_ms: int


class UpstreamSigner:
    """Signs one forwarded request with the upstream credentials; its repr is masked."""

    __slots__ = ("_hmac", "_rsa", "api_key")

    def __init__(self, credentials: UpstreamCredentials) -> None:
        self.api_key = credentials.api_key
        self._hmac: HmacKey | None = None
        self._rsa: rsa.RSAPrivateKey | None = None
        if credentials.key_type == "rsa":
            self._rsa = load_rsa_private_key(credentials.secret)
        else:
            self._hmac = HmacKey(credentials.secret)

    def __repr__(self) -> str:
        return f"UpstreamSigner(api_key={mask_api_key(self.api_key)!r})"

    def headers(self, *, timestamp_ms: int, recv_window: str, payload: bytes) -> dict[str, str]:
        """The Bybit V5 auth headers for one request.

        timestamp_ms: int, the upstream-facing clock in ms. recv_window: str of ms ("5000").
        payload: bytes, the query string exactly as sent (GET) or the raw body (POST).
        Returns X-BAPI-API-KEY, X-BAPI-TIMESTAMP, X-BAPI-RECV-WINDOW, X-BAPI-SIGN and
        X-BAPI-SIGN-TYPE "2" (as pybit sends it). Source: Bybit V5 guide, authentication.
        """
        timestamp = str(timestamp_ms)
        message = string_to_sign(timestamp, self.api_key, recv_window, payload)
        if self._rsa is not None:
            signature = sign_rsa(self._rsa, message)
        else:
            assert self._hmac is not None
            signature = self._hmac.sign(message)
        return {
            "X-BAPI-API-KEY": self.api_key,
            "X-BAPI-TIMESTAMP": timestamp,
            "X-BAPI-RECV-WINDOW": recv_window,
            "X-BAPI-SIGN": signature,
            "X-BAPI-SIGN-TYPE": "2",
        }


def mask_api_key(api_key: str) -> str:
    """The api key with all but its first 4 and last 2 characters as '*' ("ABCD************QR").

    Keys shorter than 10 characters are shown as "****" only.
    """
    if len(api_key) < 10:
        return "****"
    return api_key[:4] + "*" * (len(api_key) - 6) + api_key[-2:]


def _associated(name: str, api_key: str) -> str:
    return f"keyplane-upstream:{name}:{api_key}"


def _check_api_key(api_key: str) -> str:
    api_key = api_key.strip()
    if not api_key or len(api_key) > MAX_API_KEY_LENGTH:
        raise ParameterError(f"the upstream api key must be 1..{MAX_API_KEY_LENGTH} characters")
    if not set(api_key) <= _API_KEY_CHARS:
        raise ParameterError("the upstream api key may hold only letters, digits, '-', '_', '.'")
    return api_key


def _check_secret(secret: Secret[str], key_type: KeyType) -> Secret[str]:
    """The secret normalised (surrounding whitespace dropped); ParameterError when unusable.

    Error messages never contain the secret.
    """
    text = secret.reveal().strip()
    if key_type == "rsa":
        try:
            load_rsa_private_key(Secret(text))
        except (ValueError, TypeError) as exc:
            raise ParameterError("the file is not a PEM RSA private key (unencrypted)") from exc
        return Secret(text + "\n")
    if not text:
        raise ParameterError("the upstream secret is empty")
    if not set(text) <= _SECRET_CHARS:
        raise ParameterError("the upstream secret may hold only printable ASCII, no spaces")
    return Secret(text)


def save_upstream_credentials(
    store: Store,
    kek: KeyEncryptionKey,
    *,
    api_key: str,
    secret: Secret[str],
    key_type: KeyType,
    now_ms: int,
    name: str = DEFAULT_UPSTREAM,
    actor: str = "admin:cli",
) -> UpstreamCredentialsRecord:
    """Validate, encrypt under the KEK and store the credentials (replacing earlier ones).

    secret: the HMAC secret (key_type "hmac") or the PEM RSA private key ("rsa"). now_ms: int,
    ms since epoch. Bumps the store revision, so running gateways re-read within one poll, and
    writes an "upstream.set" audit event (api key and type, never the secret) in the same
    transaction. Raises ParameterError (10001) for a malformed api key, secret or PEM (never
    echoing it).
    """
    api_key = _check_api_key(api_key)
    clean = _check_secret(secret, key_type)
    record = UpstreamCredentialsRecord(
        name=name,
        api_key=api_key,
        key_type=key_type,
        secret_ciphertext=kek.encrypt(clean, associated=_associated(name, api_key)),
        set_at_ms=now_ms,
    )
    previous = store.find_upstream_credentials(name)
    event = AuditEvent(
        at_ms=now_ms,
        actor=actor,
        action=AuditAction.UPSTREAM_SET,
        target=f"upstream:{name}",
        before={"apiKey": previous.api_key, "keyType": previous.key_type} if previous else {},
        after={"apiKey": api_key, "keyType": key_type},
    )
    store.set_upstream_credentials(record, audit=(event,))
    return record


def load_upstream_credentials(
    store: Store, kek: KeyEncryptionKey, name: str = DEFAULT_UPSTREAM
) -> UpstreamCredentials | None:
    """The stored credentials decrypted, or None when none are set.

    Raises SecretDecryptionError (10016) when the row does not decrypt under this KEK.
    """
    record = store.find_upstream_credentials(name)
    if record is None:
        return None
    secret = kek.decrypt(record.secret_ciphertext, associated=_associated(name, record.api_key))
    return UpstreamCredentials(
        api_key=record.api_key,
        key_type=record.key_type,
        secret=secret,
        set_at_ms=record.set_at_ms,
    )


def clear_upstream_credentials(
    store: Store, name: str = DEFAULT_UPSTREAM, *, now_ms: int, actor: str = "admin:cli"
) -> bool:
    """Delete the stored credentials; True when there were some (running gateways then answer
    10016 "upstream credentials not set" on private routes). Writes an "upstream.clear" audit
    event (now_ms: int, ms since epoch) in the same transaction when there were some."""
    previous = store.find_upstream_credentials(name)
    if previous is None:
        return False
    event = AuditEvent(
        at_ms=now_ms,
        actor=actor,
        action=AuditAction.UPSTREAM_CLEAR,
        target=f"upstream:{name}",
        before={"apiKey": previous.api_key, "keyType": previous.key_type},
    )
    return store.delete_upstream_credentials(name, audit=(event,))
