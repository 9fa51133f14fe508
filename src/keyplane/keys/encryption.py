"""Secrets at rest: AES-256-GCM under a key-encryption key (KEK).

Blob layout: b"\\x01" (format version) + 12-byte random nonce + ciphertext-with-tag. The api key is
the associated data, so a ciphertext copied onto another key's row does not decrypt.
The KEK comes from KEYPLANE_KEK (base64 of 32 bytes) or, for the embedded default, a 0600 file
created on first run beside the SQLite database.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyplane.errors import KeyplaneError
from keyplane.secret import Secret

__all__ = ["KeyEncryptionKey", "SecretDecryptionError"]

_VERSION = b"\x01"
_NONCE_BYTES = 12


class SecretDecryptionError(KeyplaneError):
    """A stored secret does not decrypt under this KEK (wrong KEK or tampered row)."""


class KeyEncryptionKey:
    """The key-encryption key; encrypts and decrypts API secrets. Its repr is masked."""

    __slots__ = ("_aead", "_kek")

    def __init__(self, kek: Secret[bytes]) -> None:
        if len(kek.reveal()) != 32:
            raise ValueError("the key-encryption key must be 32 bytes (AES-256)")
        self._kek = kek
        self._aead = AESGCM(kek.reveal())

    def __repr__(self) -> str:
        return "KeyEncryptionKey('**********')"

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        """A new random KEK."""
        return cls(Secret(AESGCM.generate_key(bit_length=256)))

    @classmethod
    def from_base64(cls, text: Secret[str]) -> KeyEncryptionKey:
        """Parse base64 of 32 bytes (the KEYPLANE_KEK form); raises ValueError otherwise."""
        try:
            raw = base64.b64decode(text.reveal().strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("KEYPLANE_KEK must be base64 of 32 bytes") from exc
        return cls(Secret(raw))

    def to_base64(self) -> Secret[str]:
        """The KEYPLANE_KEK form, masked."""
        return Secret(base64.b64encode(self._kek.reveal()).decode("ascii"))

    @classmethod
    def load_or_create_file(cls, path: Path) -> KeyEncryptionKey:
        """Read the KEK file at path, or create it (mode 0600, exclusive) when absent."""
        if path.exists():
            return cls.from_base64(Secret(path.read_text(encoding="ascii")))
        kek = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(kek.to_base64().reveal() + "\n")
        return kek

    def encrypt(self, plaintext: Secret[str], *, associated: str) -> bytes:
        """Encrypt a secret; associated: str bound to the blob (the api key)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.reveal().encode(), associated.encode())
        return _VERSION + nonce + sealed

    def decrypt(self, blob: bytes, *, associated: str) -> Secret[str]:
        """Decrypt a blob made by encrypt(); raises SecretDecryptionError on any mismatch."""
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES + 16:
            raise SecretDecryptionError("stored secret has an unknown format")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            raw = self._aead.decrypt(nonce, sealed, associated.encode())
        except InvalidTag as exc:
            raise SecretDecryptionError(
                "stored secret does not decrypt: wrong key-encryption key or tampered row"
            ) from exc
        return Secret(raw.decode())
