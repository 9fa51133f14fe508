"""The real pybit client against a running keyplane: the main job and every error path."""

from __future__ import annotations

import pytest
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from keyplane.keys import KeyStatus

from .conftest import Server, within_one_second


def session(url: str, api_key: str, secret: str, **kw: object) -> HTTP:
    s = HTTP(api_key=api_key, api_secret=secret, max_retries=1, retry_delay=0, **kw)
    s.endpoint = url
    return s


def ret_code_of(call: object) -> int:
    with pytest.raises(InvalidRequestError) as info:
        call()  # type: ignore[operator]
    return int(info.value.status_code)


class TestPybitMainJob:
    def test_wallet_balance_order_and_key_info(self, server: Server) -> None:
        """Printed credentials work: balance, a paper market buy, and the key's own info."""
        s = session(server.url, server.api_key, server.secret)
        wallet = s.get_wallet_balance(accountType="UNIFIED")
        assert wallet["retCode"] == 0
        coins = {c["coin"]: c for c in wallet["result"]["list"][0]["coin"]}
        assert coins["USDT"]["walletBalance"] == "100000"
        order = s.place_order(
            category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="600"
        )
        assert order["retCode"] == 0
        assert order["result"]["orderId"]
        after = s.get_wallet_balance(accountType="UNIFIED")
        coins = {c["coin"]: c for c in after["result"]["list"][0]["coin"]}
        assert coins["USDT"]["walletBalance"] == "99400"
        info = s.get_api_key_information()["result"]
        assert info["apiKey"] == server.api_key
        assert info["secret"] == ""
        assert info["readOnly"] == 0
        assert "Withdraw" not in info["permissions"]["Wallet"]
        assert info["ips"] == ["*"]
        assert info["deadlineDay"] == 90

    def test_rsa_key(self, server: Server, rsa_private_pem: tuple[str, str]) -> None:
        """An RSA key (public PEM uploaded) authenticates pybit's rsa_authentication mode."""
        private_pem, public_pem = rsa_private_pem
        api_key, secret = server.new_key(rsa_public_key=public_pem)
        assert secret == ""
        s = session(server.url, api_key, private_pem, rsa_authentication=True)
        assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        order = s.place_order(
            category="spot", symbol="ETHUSDT", side="Buy", orderType="Market", qty="30"
        )
        assert order["retCode"] == 0


class TestPybitErrors:
    def test_wrong_secret_is_10004(self, server: Server) -> None:
        """A wrong secret -> InvalidRequestError with status_code 10004."""
        s = session(server.url, server.api_key, "x" * 36)
        assert ret_code_of(lambda: s.get_wallet_balance(accountType="UNIFIED")) == 10004

    def test_unknown_key_is_10003(self, server: Server) -> None:
        """An unknown api key -> 10003."""
        s = session(server.url, "A" * 18, server.secret)
        assert ret_code_of(lambda: s.get_wallet_balance(accountType="UNIFIED")) == 10003

    def test_read_only_key_cannot_trade(self, server: Server) -> None:
        """A read-only key reads but placing an order is 10005."""
        api_key, secret = server.new_key(read_only=True)
        s = session(server.url, api_key, secret)
        assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        code = ret_code_of(
            lambda: s.place_order(
                category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="10"
            )
        )
        assert code == 10005

    def test_missing_permission_is_10005(self, server: Server) -> None:
        """A spot-only key cannot place a linear order."""
        api_key, secret = server.new_key(permissions="Spot:SpotTrade")
        s = session(server.url, api_key, secret)
        code = ret_code_of(
            lambda: s.place_order(
                category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01"
            )
        )
        assert code == 10005

    def test_ip_bound_key_from_other_ip_is_10010(self, server: Server) -> None:
        """A key bound to 10.0.0.1 used from 127.0.0.1 -> 10010; bound to 127.0.0.1 works."""
        api_key, secret = server.new_key(ips="10.0.0.1")
        s = session(server.url, api_key, secret)
        assert ret_code_of(lambda: s.get_wallet_balance(accountType="UNIFIED")) == 10010
        api_key, secret = server.new_key(ips="127.0.0.0/8,::1")
        s = session(server.url, api_key, secret)
        assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0

    def test_expired_key_is_33004(self, server: Server) -> None:
        """A key past its expiredAt -> 33004."""
        api_key, secret = server.new_key()
        key = server.service.get_key(api_key)
        server.service.store.save_key(key.with_changes(expires_at_ms=key.created_at_ms + 1))
        s = session(server.url, api_key, secret)
        assert within_one_second(lambda: s.get_wallet_balance(accountType="UNIFIED")) == 33004

    def test_revoked_key_is_10003(self, server: Server) -> None:
        """After revocation the key is refused with 10003."""
        api_key, secret = server.new_key()
        s = session(server.url, api_key, secret)
        assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0
        revoked = server.service.revoke_key(api_key)
        assert revoked.status is KeyStatus.REVOKED
        assert within_one_second(lambda: s.get_wallet_balance(accountType="UNIFIED")) == 10003
