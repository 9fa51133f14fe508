"""A value that hides itself: API secrets, the key-encryption key, database passwords."""

from __future__ import annotations

import hmac
from typing import Generic, TypeVar

__all__ = ["Secret"]

T = TypeVar("T", str, bytes)


class Secret(Generic[T]):
    """Wraps a secret so that repr(), str() and f-strings never show it.

    Call reveal() at the one place that needs the plaintext (signing, encryption, display once).
    """

    __slots__ = ("_value",)
    _value: T

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        """Return the plaintext; never log or store what this returns."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(_as_bytes(self._value), _as_bytes(other._value))

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value
