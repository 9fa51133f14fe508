"""Money movement on the demo venue: paper withdrawals and inter-account transfers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from keyplane.venue import VenueState
from tests.venue.conftest import DEFAULT_UID, NOW_MS, Api

WITHDRAW = {"coin": "USDT", "chain": "TRX", "address": "TXaddr123", "timestamp": NOW_MS}


def transfer(api: Api, **body: Any) -> dict[str, Any]:
    base = {"transferId": str(uuid.uuid4()), "coin": "USDT", "amount": "100",
            "fromAccountType": "UNIFIED", "toAccountType": "FUND"}  # fmt: skip
    return api.post("/v5/asset/transfer/inter-transfer", {**base, **body})


class TestWithdraw:
    def test_withdraw_debits_amount_plus_fee(self, api: Api, state: VenueState) -> None:
        """A withdrawal returns a numeric id and debits amount + the chain's withdrawFee."""
        result = api.ok("POST", "/v5/asset/withdraw/create", {**WITHDRAW, "amount": "250"})
        assert result["id"].isdigit()
        assert api.coins()["USDT"]["walletBalance"] == "99749"
        (record,) = state.withdrawals(DEFAULT_UID)
        assert (record.id, record.address, record.chain) == (result["id"], "TXaddr123", "TRX")

    def test_fee_type_1_includes_the_fee(self, api: Api) -> None:
        """feeType 1: the fee comes out of amount, so exactly amount is debited."""
        api.ok("POST", "/v5/asset/withdraw/create", {**WITHDRAW, "amount": "250", "feeType": 1})
        assert api.coins()["USDT"]["walletBalance"] == "99750"

    def test_ids_are_distinct(self, api: Api) -> None:
        """Each withdrawal gets its own id."""
        ids = {api.ok("POST", "/v5/asset/withdraw/create", {**WITHDRAW, "amount": "20"})["id"]
               for _ in range(3)}  # fmt: skip
        assert len(ids) == 3

    def test_insufficient_balance_is_110007(self, api: Api) -> None:
        """More than the available balance fails with 110007 and debits nothing."""
        body = {**WITHDRAW, "coin": "BTC", "chain": "BTC", "amount": "1"}
        env = api.post("/v5/asset/withdraw/create", body)
        assert env["retCode"] == 110007
        assert api.coins()["BTC"]["walletBalance"] == "1"

    def test_locked_funds_cannot_be_withdrawn(self, api: Api) -> None:
        """Balance locked by a resting order is not available to withdraw."""
        api.ok("POST", "/v5/order/create", {"category": "spot", "symbol": "BTCUSDT", "side": "Sell",
               "orderType": "Limit", "qty": "0.9", "price": "70000"})  # fmt: skip
        body = {**WITHDRAW, "coin": "BTC", "chain": "BTC", "amount": "0.5"}
        assert api.post("/v5/asset/withdraw/create", body)["retCode"] == 110007

    @pytest.mark.parametrize(
        ("change", "needle"),
        [
            ({"amount": "0"}, "amount"),
            ({"amount": "-3"}, "amount"),
            ({"amount": "x"}, "amount"),
            ({"amount": None}, "amount"),
            ({"amount": "5"}, "withdrawMin"),
            ({"amount": "10.00001"}, "minAccuracy"),
            ({"address": ""}, "address"),
            ({"address": "   "}, "address"),
            ({"coin": "DOGE"}, "DOGE"),
            ({"chain": "SOL"}, "chain"),
            ({"timestamp": None}, "timestamp"),
            ({"timestamp": "soon"}, "timestamp"),
            ({"accountType": "CONTRACT"}, "accountType"),
        ],
    )
    def test_bad_withdrawal_is_10001(self, api: Api, change: dict[str, Any], needle: str) -> None:
        """Malformed withdrawals are 10001 naming the parameter, and debit nothing."""
        body = {k: v for k, v in {**WITHDRAW, "amount": "50", **change}.items() if v is not None}
        env = api.post("/v5/asset/withdraw/create", body)
        assert env["retCode"] == 10001, env
        assert needle in env["retMsg"]
        assert api.coins()["USDT"]["walletBalance"] == "100000"

    def test_fund_account_withdrawal_uses_the_fund_wallet(self, api: Api) -> None:
        """accountType FUND draws on the FUND wallet filled by a transfer."""
        assert transfer(api, amount="500")["retCode"] == 0
        body = {**WITHDRAW, "amount": "100", "accountType": "FUND"}
        api.ok("POST", "/v5/asset/withdraw/create", body)
        assert api.coins()["USDT"]["walletBalance"] == "99500"
        assert api.post("/v5/asset/withdraw/create", {**body, "amount": "400"})["retCode"] == 110007


class TestTransfer:
    def test_transfer_moves_between_wallets(self, api: Api, state: VenueState) -> None:
        """UNIFIED -> FUND answers SUCCESS and leaves the unified wallet lighter."""
        transfer_id = str(uuid.uuid4())
        env = transfer(api, transferId=transfer_id, amount="1234.5")
        assert env["result"] == {"transferId": transfer_id, "status": "SUCCESS"}
        assert api.coins()["USDT"]["walletBalance"] == "98765.5"
        back = transfer(api, amount="234.5", fromAccountType="FUND", toAccountType="UNIFIED")
        assert back["retCode"] == 0
        assert api.coins()["USDT"]["walletBalance"] == "99000"
        assert len(state.transfers(DEFAULT_UID)) == 2

    def test_insufficient_balance_is_110007(self, api: Api) -> None:
        """More than available, or from an empty FUND wallet, is 110007."""
        assert transfer(api, coin="BTC", amount="2")["retCode"] == 110007
        empty = transfer(api, fromAccountType="FUND", toAccountType="UNIFIED")
        assert empty["retCode"] == 110007

    def test_duplicate_transfer_id_is_10001(self, api: Api) -> None:
        """A transferId can be used once."""
        transfer_id = str(uuid.uuid4())
        assert transfer(api, transferId=transfer_id)["retCode"] == 0
        env = transfer(api, transferId=transfer_id)
        assert env["retCode"] == 10001
        assert "transferId" in env["retMsg"]

    @pytest.mark.parametrize(
        ("change", "needle"),
        [
            ({"transferId": "not-a-uuid"}, "transferId"),
            ({"transferId": None}, "transferId"),
            ({"amount": "0"}, "amount"),
            ({"amount": "ten"}, "amount"),
            ({"coin": "XYZ"}, "XYZ"),
            ({"fromAccountType": "SPOT"}, "fromAccountType"),
            ({"toAccountType": "UNIFIED"}, "differ"),
            ({"toAccountType": None}, "toAccountType"),
        ],
    )
    def test_bad_transfer_is_10001(self, api: Api, change: dict[str, Any], needle: str) -> None:
        """Malformed transfers are 10001 naming the parameter."""
        body = {"transferId": str(uuid.uuid4()), "coin": "USDT", "amount": "100",
                "fromAccountType": "UNIFIED", "toAccountType": "FUND", **change}  # fmt: skip
        env = api.post(
            "/v5/asset/transfer/inter-transfer", {k: v for k, v in body.items() if v is not None}
        )
        assert env["retCode"] == 10001, env
        assert needle in env["retMsg"]
