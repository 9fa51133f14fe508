"""Money movement on the demo venue: paper inter-account transfers and withdrawals.

Transfers move a coin between an account's UNIFIED and FUND wallets (Bybit V5 "Create Internal
Transfer"); withdrawals debit the amount plus the chain's fee and record it (Bybit V5
"Withdraw"). Nothing leaves the process. Amounts are Decimal in the coin. Not thread-safe on
its own: VenueState holds its lock around every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from keyplane.errors import InsufficientBalanceError, ParameterError
from keyplane.venue.balances import FUND, UNIFIED, Wallets
from keyplane.venue.instruments import COINS, check_step, fmt

__all__ = ["Movements", "Transfer", "WithdrawRequest", "Withdrawal"]


@dataclass(frozen=True, slots=True)
class Transfer:
    """A paper inter-account transfer; amount in coin; created_ms: ms since epoch."""

    transfer_id: str
    uid: int
    coin: str
    amount: Decimal
    from_account_type: str
    to_account_type: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class WithdrawRequest:
    """A parsed `POST /v5/asset/withdraw/create`: amount (in coin) reaches the address on chain
    (None: the coin's first chain); account_type as VenueState.withdraw documents;
    fee_included: feeType 1, the fee comes out of amount."""

    coin: str
    chain: str | None
    address: str
    amount: Decimal
    account_type: str | None = None
    fee_included: bool = False


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A paper withdrawal; amount and fee in coin; created_ms: ms since epoch."""

    id: str
    uid: int
    coin: str
    chain: str
    address: str
    amount: Decimal
    fee: Decimal
    account_type: str
    created_ms: int


class Movements:
    """Every account's paper transfers and withdrawals.

    known_coins: the coins transfers accept; withdrawals accept the coins of COINS.
    """

    def __init__(self, wallets: Wallets, known_coins: frozenset[str]) -> None:
        self._wallets = wallets
        self._known_coins = known_coins
        self._transfers: dict[str, Transfer] = {}
        self._withdrawals: dict[int, list[Withdrawal]] = {}
        self._next_withdrawal_id = 10_000_000

    def transfer(self, record: Transfer) -> Transfer:
        """Check and book a transfer between record.uid's UNIFIED and FUND wallets; returns
        record. Raises as VenueState.transfer documents."""
        uid, coin, amount = record.uid, record.coin, record.amount
        source, target = record.from_account_type, record.to_account_type
        for name, kind in (("fromAccountType", source), ("toAccountType", target)):
            if kind not in (UNIFIED, FUND):
                raise ParameterError(f"{name} {kind} is not supported: use UNIFIED or FUND")
        if source == target:
            raise ParameterError("fromAccountType and toAccountType must differ")
        if coin not in self._known_coins:
            raise ParameterError(f"coin {coin} is not supported")
        if amount <= 0:
            raise ParameterError("amount must be greater than 0")
        if record.transfer_id in self._transfers:
            raise ParameterError("transferId is duplicate")
        self._wallets.open(uid, record.created_ms)
        available = self._wallets.available(uid, source, coin)
        if amount > available:
            raise InsufficientBalanceError(
                f"Insufficient balance in {source}: {fmt(available)} {coin} available."
            )
        self._wallets.move(uid, source, coin, -amount)
        self._wallets.move(uid, target, coin, amount)
        self._transfers[record.transfer_id] = record
        return record

    def withdraw(self, uid: int, now_ms: int, req: WithdrawRequest) -> Withdrawal:
        """Debit and record a paper withdrawal of uid at now_ms (ms since epoch); raises as
        VenueState.withdraw documents."""
        coin, chain, amount, account_type = req.coin, req.chain, req.amount, req.account_type
        info = COINS.get(coin)
        if info is None:
            raise ParameterError(f"coin {coin} is not supported for withdrawal")
        chosen = info.find_chain(chain) if chain else info.chains[0]
        if chosen is None:
            raise ParameterError(f"chain {chain} is not supported for {coin}")
        check_step(amount, Decimal(1).scaleb(-chosen.min_accuracy), "amount", "minAccuracy step")
        if amount < chosen.withdraw_min:
            raise ParameterError(
                f"amount {fmt(amount)} is below the minimum withdrawMin {fmt(chosen.withdraw_min)}"
            )
        debit = amount if req.fee_included else amount + chosen.withdraw_fee
        if req.fee_included and amount <= chosen.withdraw_fee:
            raise ParameterError("amount must exceed the withdrawFee when feeType is 1")
        sources = {"FUND": (FUND,), "FUND,UTA": (FUND, UNIFIED)}.get(account_type or "")
        if sources is None:
            if account_type not in (None, "", "UTA", "UNIFIED", "SPOT"):
                raise ParameterError(f"accountType {account_type} is not supported")
            sources = (UNIFIED,)
        self._wallets.open(uid, now_ms)
        held = [(s, self._wallets.available(uid, s, coin)) for s in sources]
        if debit > sum(a for _, a in held):
            raise InsufficientBalanceError(
                f"Insufficient available balance: {fmt(debit)} {coin} needed."
            )
        left = debit
        for source, available in held:
            take = min(left, available)
            self._wallets.move(uid, source, coin, -take)
            left -= take
        self._next_withdrawal_id += 1
        record = Withdrawal(
            str(self._next_withdrawal_id), uid, coin, chosen.chain, req.address, amount,
            debit - amount, account_type or UNIFIED, now_ms,
        )  # fmt: skip
        self._withdrawals.setdefault(uid, []).append(record)
        return record

    def withdrawals(self, uid: int) -> list[Withdrawal]:
        """uid's paper withdrawals, oldest first (a new list)."""
        return list(self._withdrawals.get(uid, ()))

    def transfers(self, uid: int) -> list[Transfer]:
        """uid's paper transfers, oldest first (a new list)."""
        return [t for t in self._transfers.values() if t.uid == uid]
