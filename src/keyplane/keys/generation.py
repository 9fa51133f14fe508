"""Generation of api keys and HMAC secrets from the OS CSPRNG (`secrets`)."""

from __future__ import annotations

import secrets
import string

from keyplane.secret import Secret

__all__ = ["API_KEY_LENGTH", "SECRET_LENGTH", "new_api_key", "new_hmac_secret"]

_ALPHABET = string.ascii_letters + string.digits
#: Bybit api keys are 18 alphanumerics; secrets 36.
API_KEY_LENGTH = 18
SECRET_LENGTH = 36


def new_api_key() -> str:
    """A fresh 18-character alphanumeric api key (about 107 bits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(API_KEY_LENGTH))


def new_hmac_secret() -> Secret[str]:
    """A fresh 36-character alphanumeric HMAC secret (about 214 bits), masked."""
    return Secret("".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH)))
