"""Live /v5/private connections close within 1 s when their key stops being valid, and stay
open when the store cannot be read during the re-check."""

from __future__ import annotations

import dataclasses
import time

from keyplane.keys import IpAllowlist
from keyplane.keys.model import AccountStatus, KeyStatus
from tests.ws.conftest import Client, WsServer

CLOSE_POLICY = 1008


def _subscribed(server: WsServer, **key_args: str) -> tuple[str, Client]:
    api_key, secret = server.new_key(**key_args)
    client = server.connect()
    assert client.auth(api_key, secret)["success"] is True
    assert client.ask({"op": "subscribe", "args": ["order"]})["success"] is True
    return api_key, client


class TestRevocation:
    def test_revoked_key_closes_within_one_second(self, server: WsServer) -> None:
        """A revocation written out of band (as by the CLI) closes the connection in < 1 s."""
        api_key, client = _subscribed(server)
        _, bystander = _subscribed(server)
        server.service.revoke_key(api_key)
        code, waited = client.wait_closed(within_s=1.0)
        assert code == CLOSE_POLICY
        assert waited < 1.0
        assert bystander.ask({"op": "ping"})["op"] == "pong"

    def test_suspended_key_closes(self, server: WsServer) -> None:
        """A suspended key's connections close."""
        api_key, client = _subscribed(server)
        key = server.service.get_key(api_key)
        server.store.save_key(dataclasses.replace(key, status=KeyStatus.SUSPENDED))
        assert client.wait_closed(within_s=1.0)[0] == CLOSE_POLICY

    def test_frozen_account_closes(self, server: WsServer) -> None:
        """Freezing the account closes its keys' connections."""
        _, client = _subscribed(server)
        account = server.service.get_account(server.uid)
        server.store.save_account(dataclasses.replace(account, status=AccountStatus.FROZEN))
        assert client.wait_closed(within_s=1.0)[0] == CLOSE_POLICY

    def test_ip_binding_that_excludes_the_client_closes(self, server: WsServer) -> None:
        """Binding the key to other IPs closes the connection from this IP."""
        api_key, client = _subscribed(server)
        server.service.update_key(api_key, ips=IpAllowlist.parse("10.1.2.3"))
        assert client.wait_closed(within_s=1.0)[0] == CLOSE_POLICY

    def test_change_that_keeps_the_key_valid_keeps_the_connection(self, server: WsServer) -> None:
        """A note change invalidates the cache but the connection stays."""
        api_key, client = _subscribed(server)
        server.service.update_key(api_key, note="renamed")
        time.sleep(0.6)
        assert client.ask({"op": "ping"})["op"] == "pong"

    def test_store_outage_keeps_connections_then_retries(self, server: WsServer) -> None:
        """Unreadable store during the re-check: keep the connection; the next invalidation
        after recovery closes a revoked key."""
        api_key, client = _subscribed(server)
        hub = server.app.state.ws_hub
        server.store.down = True
        before = hub.rechecks
        server.app.state.cache.clear()
        deadline = time.monotonic() + 2
        while hub.rechecks == before:
            assert time.monotonic() < deadline, "no re-check ran"
            time.sleep(0.02)
        time.sleep(0.3)
        assert client.ask({"op": "ping"})["op"] == "pong"
        server.store.down = False
        server.service.revoke_key(api_key)
        assert client.wait_closed(within_s=1.0)[0] == CLOSE_POLICY
