"""The /v5/user/* key-management routes driven by pybit's own methods."""

from __future__ import annotations

import pytest
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from .conftest import Server


def session(server: Server, api_key: str, secret: str) -> HTTP:
    s = HTTP(api_key=api_key, api_secret=secret, max_retries=3, retry_delay=0)
    s.endpoint = server.url
    return s


def ret_code(call: object) -> int:
    with pytest.raises(InvalidRequestError) as info:
        call()  # type: ignore[operator]
    return int(info.value.status_code)


TRADE = {"Spot": ["SpotTrade"], "ContractTrade": ["Order", "Position"]}
SELF_ADMIN = {**TRADE, "Wallet": ["SubMemberTransferList"]}


class TestSubAccountsAndKeys:
    def test_sub_key_lifecycle(self, server: Server) -> None:
        """Create sub UID and its key, use it, list, modify, delete: as Bybit's API does."""
        master = session(server, server.api_key, server.secret)
        member = master.create_sub_uid(username="desk0001", memberType=1)["result"]
        sub_uid = int(member["uid"])
        members = master.get_sub_uid_list()["result"]["subMembers"]
        assert [m["uid"] for m in members] == [member["uid"]]

        made = master.create_sub_api_key(
            subuid=sub_uid, readOnly=0, permissions=SELF_ADMIN, note="bot one", ips="*"
        )["result"]
        assert len(made["secret"]) == 36
        assert made["permissions"]["Spot"] == ["SpotTrade"]
        assert made["readOnly"] == 0
        sub = session(server, made["apiKey"], made["secret"])
        info = sub.get_api_key_information()["result"]
        assert info["isMaster"] is False
        assert info["parentUid"] == str(server.uid)
        assert info["userID"] == sub_uid
        assert (
            sub.place_order(
                category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="50"
            )["retCode"]
            == 0
        )

        second = master.create_sub_api_key(subuid=sub_uid, readOnly=1, permissions={})["result"]
        page1 = master.get_all_sub_api_keys(subMemberId=sub_uid, limit=1)["result"]
        assert [k["apiKey"] for k in page1["result"]] == [made["apiKey"]]
        assert page1["result"][0]["secret"] == "******"
        assert page1["result"][0]["readOnly"] is False
        assert page1["result"][0]["flag"] == "hmac"
        assert page1["result"][0]["status"] == 3
        page2 = master.get_all_sub_api_keys(
            subMemberId=sub_uid, limit=1, cursor=page1["nextPageCursor"]
        )["result"]
        assert [k["apiKey"] for k in page2["result"]] == [second["apiKey"]]
        assert page2["nextPageCursor"] == ""

        changed = sub.modify_sub_api_key(readOnly=1)["result"]
        assert changed["readOnly"] == 1
        assert (
            ret_code(
                lambda: sub.place_order(
                    category="spot", symbol="BTCUSDT", side="Buy", orderType="Market", qty="50"
                )
            )
            == 10005
        )
        rebound = master.modify_sub_api_key(apikey=made["apiKey"], ips="127.0.0.1")["result"]
        assert rebound["ips"] == ["127.0.0.1"]
        master.delete_sub_api_key(apikey=made["apiKey"])
        assert ret_code(lambda: sub.get_api_key_information()) == 10003

    def test_sub_key_cannot_manage_keys(self, server: Server) -> None:
        """Master-only routes refuse sub account keys with 10005."""
        master = session(server, server.api_key, server.secret)
        sub_uid = int(master.create_sub_uid(username="desk0002", memberType=1)["result"]["uid"])
        made = master.create_sub_api_key(
            subuid=sub_uid,
            readOnly=0,
            permissions={"Wallet": ["AccountTransfer", "SubMemberTransferList"]},
        )["result"]
        sub = session(server, made["apiKey"], made["secret"])
        assert (
            ret_code(lambda: sub.create_sub_api_key(subuid=sub_uid, readOnly=0, permissions=TRADE))
            == 10005
        )
        assert ret_code(lambda: sub.get_all_sub_api_keys(subMemberId=sub_uid)) == 10005

    def test_master_cannot_touch_foreign_sub_accounts(self, server: Server) -> None:
        """A master key cannot create keys for a uid that is not its own sub account."""
        other_master = server.service.create_account()
        foreign_sub = server.service.create_account(parent_uid=other_master.uid)
        master = session(server, server.api_key, server.secret)
        code = ret_code(
            lambda: master.create_sub_api_key(subuid=foreign_sub.uid, readOnly=0, permissions=TRADE)
        )
        assert code == 10001

    def test_withdraw_cannot_be_granted_to_sub_keys(self, server: Server) -> None:
        """Wallet:Withdraw is master-only: granting it to a sub key is 10001."""
        master = session(server, server.api_key, server.secret)
        sub_uid = int(master.create_sub_uid(username="desk0003", memberType=1)["result"]["uid"])
        code = ret_code(
            lambda: master.create_sub_api_key(
                subuid=sub_uid, readOnly=0, permissions={"Wallet": ["Withdraw"]}
            )
        )
        assert code == 10001

    def test_master_key_update_and_delete(self, server: Server) -> None:
        """update-api binds the master key to an IP; delete-api revokes it."""
        api_key, secret = server.new_key(permissions="Wallet:AccountTransfer")
        key = session(server, api_key, secret)
        updated = key.modify_master_api_key(ips="127.0.0.1,::1", readOnly=0)["result"]
        assert updated["ips"] == ["127.0.0.1", "::1"]
        info = key.get_api_key_information()["result"]
        assert info["ips"] == ["127.0.0.1", "::1"]
        assert info["expiredAt"] == ""
        key.delete_master_api_key()
        assert ret_code(lambda: key.get_api_key_information()) == 10003

    def test_bad_parameters_are_10001(self, server: Server) -> None:
        """Unknown permission names, bad readOnly and bad IPs are parameter errors."""
        master = session(server, server.api_key, server.secret)
        sub_uid = int(master.create_sub_uid(username="desk0004", memberType=1)["result"]["uid"])
        for kwargs in (
            {"readOnly": 0, "permissions": {"Spot": ["Margin"]}},
            {"readOnly": 2, "permissions": TRADE},
            {"readOnly": 0, "permissions": TRADE, "ips": "300.1.1.1"},
            {"readOnly": 0, "permissions": ["Spot"]},
        ):
            assert (
                ret_code(lambda kw=kwargs: master.create_sub_api_key(subuid=sub_uid, **kw)) == 10001
            )
