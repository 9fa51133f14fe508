"""Redis plumbing shared by the request-path stores (rate limiter, replay store, quota counter):
a client that fails fast, and coalescing of concurrent calls into one round trip.

fail_fast_client(): redis.asyncio.from_url with 0.5 s connect and socket timeouts and one
immediate retry (for a pooled connection that died, e.g. Redis restarted). On the request path a
sick Redis must fail quickly so that RequestLimits' fail-open/closed policy decides; redis-py
reconnects on its own once Redis answers again, so no restart is needed.

CoalescedCalls: callers submit() one item each and await its result; the first submit starts a
sender task, and items submitted while a round trip is in flight wait and go together in the
next one (at most max_batch per round trip). Under load one round trip carries many decisions,
which is what makes the Redis path cheap for the node's single event loop: redis-py's cost per
command (pool checkout, packing, reply parsing) is paid once per batch. A lone item is a batch of
one, so there is never more than one round trip per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "MAX_BATCH",
    "CoalescedCalls",
    "fail_fast_client",
]

#: connect and socket timeout (s) of fail_fast_client().
DEFAULT_TIMEOUT_S = 0.5
#: immediate retries of a command whose pooled connection died.
DEFAULT_RETRIES = 1
#: most items sent in one round trip; more waiting items go in the next one.
MAX_BATCH = 256

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def fail_fast_client(url: str, **client_options: Any) -> aioredis.Redis:
    """A redis.asyncio client for url (redis://, rediss://, unix://) with DEFAULT_TIMEOUT_S
    connect and socket timeouts and DEFAULT_RETRIES immediate retries; client_options go to
    redis.asyncio.from_url and win over those defaults."""
    options: dict[str, Any] = {
        "socket_connect_timeout": DEFAULT_TIMEOUT_S,
        "socket_timeout": DEFAULT_TIMEOUT_S,
        "retry": Retry(NoBackoff(), DEFAULT_RETRIES),
    }
    options.update(client_options)
    return aioredis.from_url(url, **options)


class CoalescedCalls(Generic[ItemT, ResultT]):
    """Sends concurrently submitted items in shared round trips (see the module docstring).

    send(batch) makes one round trip for a batch (1..max_batch items, in submission order) and
    returns one result per item, in order; a result that is an Exception is raised to that
    item's caller alone. If send raises, every item of the batch fails with that exception.
    what: a few words for the error raised to waiting callers by close() (e.g. "rate limiter").
    """

    def __init__(
        self,
        send: Callable[[list[ItemT]], Awaitable[Sequence[ResultT | Exception]]],
        *,
        what: str,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._send = send
        self._what = what
        self._max_batch = max_batch
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._sender: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"CoalescedCalls({self._what!r}, waiting={len(self._pending)})"

    async def submit(self, item: ItemT) -> ResultT:
        """Queue item for the next round trip and wait for its result; raises what send raised
        (or the Exception it answered for this item), ConnectionError after close()."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._pending.append((item, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        """Send waiting items, max_batch per round trip, until none wait."""
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._send([item for item, _ in batch])
            except asyncio.CancelledError:  # close(): nobody will answer these
                _fail(batch, ConnectionError(f"{self._what} closed"))
                raise
            except Exception as exc:  # every item of the batch fails the same way
                _fail(batch, exc)
                continue
            if len(results) != len(batch):
                _fail(batch, RuntimeError(f"{self._what}: {len(results)} replies for {len(batch)}"))
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller went away meanwhile
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def close(self) -> None:
        """Stop the sender; callers still waiting get ConnectionError."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        _fail(self._pending, ConnectionError(f"{self._what} closed"))
        self._pending = []


def _fail(batch: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
