"""Weighted fair queuing of requests for one deployment's concurrency slots.

While a deployment has a free slot a request goes straight in. When it is saturated, waiters are queued
with start-time fair queuing tags: each department's next tag is max(virtual time, its last tag) plus
1/weight, and a freed slot goes to the smallest tag. Under saturation department d therefore gets
weight_d / sum(weights) of the completions; an idle department banks no credit.

`acquire` returns the request's lag: how far its tag lies ahead of the virtual time, in units of one
request of weight 1. The gateway passes it to engines that schedule by priority (vLLM), so a department
that has just sent its first request is scheduled inside the engine before one with a deep backlog. The
lag, unlike the tag, is comparable between gunicorn workers, whose virtual clocks drift apart.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FairLimiter", "QueueFull", "QueueTimeout"]


class QueueFull(Exception):
    pass


class QueueTimeout(Exception):
    pass


class FairLimiter:
    def __init__(self, limit: int, max_queue: int) -> None:
        self.limit = max(1, limit)
        self.max_queue = max_queue
        self.active = 0
        self._virtual_time = 0.0
        self._last_tag: dict[int, float] = {}
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self, department_id: int, weight: int, timeout: float) -> float:
        """Take a slot (waiting in fair order when none is free); return the request's lag (see above)."""
        if self._waiting >= self.max_queue:
            raise QueueFull
        tag = max(self._virtual_time, self._last_tag.get(department_id, 0.0)) + 1.0 / max(1, weight)
        lag = tag - self._virtual_time
        self._last_tag[department_id] = tag
        if self.active < self.limit and self._waiting == 0:
            self.active += 1
            self._virtual_time = tag
            return lag
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (tag, next(self._seq), future))
        self._waiting += 1
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if future.done() and not future.cancelled():
                # The slot was handed to us just as we gave up: pass it on.
                self.release()
            else:
                future.cancel()
                self._waiting -= 1
            if isinstance(exc, TimeoutError):
                raise QueueTimeout from None
            raise
        return lag

    def release(self) -> None:
        while self._heap:
            tag, _seq, future = heapq.heappop(self._heap)
            if future.done():
                continue
            self._waiting -= 1
            self._virtual_time = max(self._virtual_time, tag)
            future.set_result(None)  # the slot passes to the waiter; `active` is unchanged
            return
        self.active -= 1

    def resize(self, limit: int) -> None:
        self.limit = max(1, limit)
        while self.active < self.limit and self._waiting:
            self.active += 1
            self.release()
