"""Wire forms the real clients produce: non-ASCII payloads, percent-encoded queries, clock skew."""

from __future__ import annotations

from pathlib import Path

import ccxt
import pytest
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from keyplane.clock import OffsetClock

from .conftest import Server, serving
from .test_ccxt import exchange


def session(url: str, api_key: str, secret: str, **kw: object) -> HTTP:
    s = HTTP(api_key=api_key, api_secret=secret, retry_delay=0, **kw)
    s.endpoint = url
    return s


class TestNonAscii:
    def test_pybit_escaped_json_and_encoded_query(self, server: Server) -> None:
        """pybit sends \\uXXXX-escaped JSON and percent-encoded GET values; both verify."""
        s = session(server.url, server.api_key, server.secret)
        uid = s.create_sub_uid(username="unicode01", memberType=1, note="desk ü €")["result"]["uid"]
        made = s.create_sub_api_key(subuid=int(uid), readOnly=1, permissions={}, note="bot ü €")
        assert made["result"]["note"] == "bot ü €"
        listed = s.get_all_sub_api_keys(subMemberId=uid)["result"]["result"]
        assert [k["note"] for k in listed] == ["bot ü €"]
        # a GET value with a space and non-ASCII: requests percent-encodes what pybit signed raw
        found = s.get_open_orders(category="spot", symbol="BTC USDT ü")
        assert found["retCode"] == 0
        assert found["result"]["list"] == []

    def test_ccxt_raw_utf8_json(self, server: Server) -> None:
        """ccxt sends compact raw UTF-8 JSON; it verifies and the text round-trips."""
        ex = exchange(server.url, server.api_key, server.secret)
        member = ex.private_post_v5_user_create_sub_member(
            {"username": "unicode02", "memberType": 1, "note": "desk ü"}
        )
        made = ex.private_post_v5_user_create_sub_api(
            {
                "subuid": int(member["result"]["uid"]),
                "readOnly": 0,
                "note": "ccxt ü €",
                "permissions": {"Spot": ["SpotTrade"]},
            }
        )
        assert made["retCode"] == "0" or made["retCode"] == 0
        assert made["result"]["note"] == "ccxt ü €"


class TestClockSkew:
    def test_pybit_widens_recv_window_and_succeeds(self, tmp_path: Path) -> None:
        """Server 6 s ahead: 10002 at recv_window 5000, pybit retries with 7500 and succeeds."""
        with serving(tmp_path, clock=OffsetClock(6000)) as skewed:
            s = session(skewed.url, skewed.api_key, skewed.secret, max_retries=3)
            assert s.get_wallet_balance(accountType="UNIFIED")["retCode"] == 0

    def test_pybit_gives_up_when_skew_exceeds_its_retries(self, tmp_path: Path) -> None:
        """Server 30 s ahead: every retry is 10002; pybit raises after its retries."""
        with serving(tmp_path, clock=OffsetClock(30_000)) as skewed:
            s = session(skewed.url, skewed.api_key, skewed.secret, max_retries=3)
            with pytest.raises(FailedRequestError, match=r"(?i)retries exceeded"):
                s.get_wallet_balance(accountType="UNIFIED")
            once = session(skewed.url, skewed.api_key, skewed.secret, max_retries=1)
            with pytest.raises((FailedRequestError, InvalidRequestError)):
                once.get_wallet_balance(accountType="UNIFIED")

    def test_ccxt_sees_invalid_nonce(self, tmp_path: Path) -> None:
        """ccxt maps 10002 to InvalidNonce."""
        with (
            serving(tmp_path, clock=OffsetClock(-30_000)) as skewed,
            pytest.raises(ccxt.InvalidNonce, match="10002"),
        ):
            exchange(skewed.url, skewed.api_key, skewed.secret).fetch_balance()


class TestHttpStatuses:
    def test_pybit_sees_404_for_unknown_route(self, server: Server) -> None:
        """An unknown route is HTTP 404: pybit raises FailedRequestError with status 404."""
        s = session(server.url, server.api_key, server.secret, max_retries=1)
        with pytest.raises(FailedRequestError) as info:
            s._submit_request(
                method="GET", path=f"{server.url}/v5/no/such/route", query={}, auth=True
            )
        assert info.value.status_code == 404
