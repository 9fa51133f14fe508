"""A real keyplane server on 127.0.0.1 (uvicorn, SQLite file store) for the real clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pybit.exceptions import InvalidRequestError

from keyplane.clock import Clock, SystemClock
from keyplane.http.app import create_app
from keyplane.keys import KeyEncryptionKey
from keyplane.service import KeyService
from keyplane.settings import Settings
from keyplane.store import open_store
from keyplane.testing import running_server
from tests._keys import KeyIssuer


@dataclass
class Server(KeyIssuer):
    """A running server plus the first master key and a service to make more keys."""

    url: str
    db_path: Path
    db_url: str
    kek_b64: str
    uid: int
    api_key: str
    secret: str
    service: KeyService


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """keyplane serving a fresh SQLite database, initialised like `keyplane serve` does."""
    with serving(tmp_path) as running:
        yield running


@contextmanager
def serving(tmp_path: Path, *, clock: Clock | None = None, **settings: Any) -> Iterator[Server]:
    """Start a server on a fresh SQLite database under tmp_path (optionally with a skewed clock
    and more Settings fields, e.g. webhook_url=...)."""
    db_path = tmp_path / "keyplane.db"
    db_url = f"sqlite:///{db_path}"
    kek = KeyEncryptionKey.generate()
    config = Settings(database_url=db_url, kek=kek.to_base64().reveal(), **settings)
    store = open_store(db_url)
    service = KeyService(store, kek, SystemClock())
    init = service.initialize()
    assert init is not None
    assert init.issued.secret is not None
    app = create_app(config, clock=clock)
    with running_server(app) as url:
        yield Server(
            url=url,
            db_path=db_path,
            db_url=db_url,
            kek_b64=kek.to_base64().reveal(),
            uid=init.account.uid,
            api_key=init.issued.key.api_key,
            secret=init.issued.secret.reveal(),
            service=service,
        )
    store.close()


@pytest.fixture(scope="session")
def rsa_private_pem() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh RSA-2048 key pair."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def within_one_second(call: Callable[[], object]) -> int:
    """The retCode a failing call ends up with, retrying for at most 1 s (cache refresh)."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            call()
        except InvalidRequestError as exc:
            return int(exc.status_code)
        if time.monotonic() > deadline:
            raise AssertionError("call still succeeds after 1 s")
        time.sleep(0.02)
