"""Weighted fair queuing: under saturation each department gets its configured share of completions."""

from __future__ import annotations

import asyncio

import httpx

from .conftest import add_deployment, route

WARMUP = 20
WINDOW = 240


async def _flood(url: str, keys: dict[str, str], clients_each: int) -> list[str]:
    """Every department runs `clients_each` clients back to back; returns who completed, in order."""
    order: list[str] = []
    stop = asyncio.Event()
    body = {"model": "default", "messages": [{"role": "user", "content": "x"}]}

    async def one_client(name: str, http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await http.post(
                f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {keys[name]}"}
            )
            assert response.status_code == 200, response.text
            order.append(name)
            if len(order) >= WARMUP + WINDOW:
                stop.set()

    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(one_client(n, http) for n in keys for _ in range(clients_each)))
    return order


def test_saturated_deployment_is_shared_by_department_weight(world, upstream, gateway):
    slow = upstream("--delay", "0.02")
    # Two slots for 24 clients: the deployment stays saturated, the queue decides who goes next.
    shared = add_deployment("shared", slow.url, concurrency=2)
    # Both departments' routes lead to the same two slots; 24 clients keep them saturated.
    route(world.emergency, "default", shared)
    route(world.litigation, "default", shared)
    gw = gateway()
    keys = {"Emergency": world.nurse_key, "Litigation": world.lawyer_key}
    order = asyncio.run(_flood(gw.url, keys, clients_each=12))
    window = order[WARMUP : WARMUP + WINDOW]
    share = window.count("Emergency") / len(window)
    expected = world.emergency.weight / (world.emergency.weight + world.litigation.weight)  # 3 / 4
    assert abs(share - expected) <= 0.1 * expected, (share, expected)
    lit_share = window.count("Litigation") / len(window)
    assert abs(lit_share - (1 - expected)) <= 0.1 * (1 - expected) + 1 / len(window), lit_share
