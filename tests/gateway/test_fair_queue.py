"""The fair queue's lag, which the gateway passes to vLLM as the request priority (pure code, no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from appliance.gateway.fair_queue import FairLimiter, QueueFull


def test_a_fresh_department_lags_less_than_a_backlogged_one_and_slots_go_in_tag_order():
    async def scenario() -> tuple[list[float], list[str]]:
        limiter = FairLimiter(limit=1, max_queue=10)
        lags = [await limiter.acquire(department_id=1, weight=1, timeout=5)]  # takes the only slot
        served: list[str] = []

        async def wait(name: str, department: int, weight: int) -> None:
            lags.append(await limiter.acquire(department, weight, timeout=5))
            served.append(name)

        waiters = [asyncio.create_task(wait(f"a{i}", 1, 1)) for i in range(3)]
        await asyncio.sleep(0)
        waiters.append(asyncio.create_task(wait("b0", 2, 1)))
        await asyncio.sleep(0)
        for _ in range(4):
            limiter.release()
            await asyncio.sleep(0)
        await asyncio.gather(*waiters)
        return lags, served

    lags, served = asyncio.run(scenario())
    # Department 1 queued three behind its first: lags 1, 2, 3. Department 2 arrives idle: lag 1.
    assert lags[0] == 1.0
    assert sorted(lags[1:]) == [1.0, 1.0, 2.0, 3.0]
    assert served == ["a0", "b0", "a1", "a2"]


def test_a_full_queue_refuses_without_taking_a_tag():
    async def scenario() -> float:
        limiter = FairLimiter(limit=1, max_queue=1)
        await limiter.acquire(1, 1, timeout=5)
        waiter = asyncio.create_task(limiter.acquire(1, 1, timeout=5))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await limiter.acquire(2, 1, timeout=5)
        limiter.release()
        await waiter
        limiter.release()
        return await limiter.acquire(2, 1, timeout=5)

    # Department 2's refused request left no debt: its next one lags by exactly one request.
    assert asyncio.run(scenario()) == 1.0
