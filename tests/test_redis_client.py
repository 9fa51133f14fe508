"""keyplane.redis_client.CoalescedCalls: concurrent calls share round trips, errors reach the
right callers, and close() never leaves a caller waiting. The send functions here are plain
coroutines (the Redis-backed users are proven on a real Redis in tests/ratelimit, tests/replay)."""

from __future__ import annotations

import asyncio

import pytest

from keyplane.redis_client import CoalescedCalls

pytestmark = pytest.mark.anyio


class Echo:
    """send(): one 'round trip' (a short sleep) answering each item doubled; records batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def send(self, batch: list[int]) -> list[int | Exception]:
        self.batches.append(batch)
        await asyncio.sleep(0.01)
        return [ValueError(f"odd {i}") if i == 13 else i * 2 for i in batch]


async def test_concurrent_calls_share_round_trips_in_order() -> None:
    """100 calls at once travel in a few batches (at most max_batch each), in submission
    order, and each caller gets its own answer."""
    echo = Echo()
    calls: CoalescedCalls[int, int] = CoalescedCalls(echo.send, what="echo", max_batch=40)
    results = await asyncio.gather(*(calls.submit(i) for i in range(100) if i != 13))
    assert results == [i * 2 for i in range(100) if i != 13]
    assert [i for b in echo.batches for i in b] == [i for i in range(100) if i != 13]
    assert 2 <= len(echo.batches) <= 4
    assert max(len(b) for b in echo.batches) <= 40


async def test_an_error_answer_reaches_only_its_caller() -> None:
    echo = Echo()
    calls: CoalescedCalls[int, int] = CoalescedCalls(echo.send, what="echo")
    ok, bad = await asyncio.gather(calls.submit(1), calls.submit(13), return_exceptions=True)
    assert ok == 2
    assert isinstance(bad, ValueError)


async def test_a_failed_round_trip_fails_its_batch_and_the_next_one_works() -> None:
    """send raising (Redis down) fails every caller of that batch; the sender keeps going."""
    down = True

    async def send(batch: list[int]) -> list[int | Exception]:
        await asyncio.sleep(0)
        if down:
            raise ConnectionError("redis unreachable")
        return list(batch)

    calls: CoalescedCalls[int, int] = CoalescedCalls(send, what="echo")
    failed = await asyncio.gather(*(calls.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in failed)
    down = False
    assert await asyncio.gather(*(calls.submit(i) for i in range(5))) == list(range(5))


async def test_a_reply_of_the_wrong_length_fails_the_batch_instead_of_hanging() -> None:
    async def send(batch: list[int]) -> list[int | Exception]:
        return [0]  # one reply whatever the batch

    calls: CoalescedCalls[int, int] = CoalescedCalls(send, what="echo")
    results = await asyncio.wait_for(
        asyncio.gather(calls.submit(1), calls.submit(2), return_exceptions=True), timeout=2
    )
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_close_fails_waiting_callers() -> None:
    started = asyncio.Event()

    async def send(batch: list[int]) -> list[int | Exception]:
        started.set()
        await asyncio.sleep(10)
        return list(batch)

    calls: CoalescedCalls[int, int] = CoalescedCalls(send, what="echo")
    waiting = asyncio.gather(calls.submit(1), calls.submit(2), return_exceptions=True)
    await started.wait()
    queued = asyncio.ensure_future(calls.submit(3))  # waits for the next round trip
    await asyncio.sleep(0)
    calls.close()
    results = await asyncio.wait_for(waiting, timeout=2)
    assert all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError, match="echo closed"):
        await asyncio.wait_for(queued, timeout=2)
