"""Gateway benchmark: the same fast upstream called directly, through the Enclave gateway, and through
LiteLLM's proxy, side by side in one run, loopback only, bounded in time (about three minutes).

Writes bench-results/gateway.json (added_p50_ms_c1, added_p99_ms_c1, rps_ratio_vs_litellm_c100,
rps_ratio_vs_direct_c100, ttft_added_ms_c10, rss_mib_1000_streams, and the raw figures) and prints a table.
The load generator is a small asyncio HTTP/1.1 client with keep-alive (no library overhead to measure).
A fourth column, the floor (bench/gateway_floor.py), is the gateway's stack with none of the gateway: the
same gunicorn ASGI worker and aiohttp client forwarding bytes to the same upstream, with no auth, routing,
queuing, audit or metrics (floor_added_p50_ms_c1, floor_rps_ratio_vs_direct_c100, floor_ttft_added_ms_c10):
what the host charges for the server, the client and the hop before the gateway does anything.
Everything shares this machine's cores: figures are noisy on a busy 2-core box; ratios are taken within
the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a minimal HTTP/1.1 keep-alive client --------------------------------------------------------------
class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(self, raw: bytes) -> tuple[int, float, float]:
        """Send one request; return (status, seconds to the first body byte, seconds to the end)."""
        assert self.reader is not None
        assert self.writer is not None
        start = time.perf_counter()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        first = 0.0
        if b"transfer-encoding: chunked" in lower:
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                await self.reader.readexactly(size + 2)
                if not first:
                    first = time.perf_counter() - start
        else:
            index = lower.find(b"content-length:")
            length = int(lower[index + 15 : lower.find(b"\r\n", index)]) if index >= 0 else 0
            await self.reader.readexactly(length)
            first = time.perf_counter() - start
        return status, first, time.perf_counter() - start


def http_request(port: int, path: str, body: dict[str, Any], key: str) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def sequential(port: int, raw: bytes, count: int) -> list[float]:
    conn = Conn(port)
    await conn.open()
    times = []
    for _ in range(count):
        status, _first, total = await conn.request(raw)
        assert status == 200, status
        times.append(total)
    conn.close()
    return times


async def closed_loop(port: int, raw: bytes, clients: int, seconds: float) -> tuple[float, list[float], int]:
    """`clients` connections back to back for `seconds`: (requests/s, first-byte times, errors)."""
    conns = [Conn(port) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    deadline = time.perf_counter() + seconds
    done = 0
    errors = 0
    firsts: list[float] = []

    async def run(conn: Conn) -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            status, first, _total = await conn.request(raw)
            if status == 200:
                done += 1
                firsts.append(first)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return done / elapsed, firsts, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def added_ms(through: list[float], direct: list[float], q: float) -> float:
    """What a path adds over calling the upstream directly, at quantile `q`, in ms."""
    return round(pct(through, q) - pct(direct, q), 3)


# -- processes -------------------------------------------------------------------------------------------
def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes], headers: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"nothing healthy on port {port}{path} after {timeout}s")


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def start_gunicorn(app: str, port: int, workers: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`app` under gunicorn's ASGI worker, as the appliance runs the gateway."""
    argv = [sys.executable, "-m", "gunicorn", "--worker-class", "asgi", "--workers", str(workers)]
    argv += ["--worker-connections", "8192", "--backlog", "4096", "--bind", f"127.0.0.1:{port}", app]
    return start(argv, log, env)


def start_upstream(log_dir: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = start(
        [sys.executable, str(ROOT / "bench" / "gateway_upstream.py"), "--port", str(port), *args],
        log_dir / f"upstream-{port}.log",
    )
    wait_http(port, "/health", 20, proc)
    return proc, port


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (the gunicorn master and its workers)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except FileNotFoundError:
            continue
    return total / 1024


def prepare_database(database_url: str, upstreams: dict[str, int]) -> str:
    """Migrate the bench database, create a department, a user, a key and a route; return the key."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgmt.settings")
    import psycopg

    base, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            admin.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from mgmt.accounts.models import Department, Role, User
    from mgmt.accounts.services import do_create_api_key, do_create_department, do_create_user
    from mgmt.routing.models import Deployment, Model
    from mgmt.routing.services import TargetSpec, do_create_deployment, do_create_model, do_set_route

    suffix = str(int(time.time()))
    department = Department.objects.filter(slug="bench").first() or do_create_department("Bench", weight=1, actor=None)
    user = (
        User.objects.filter(username="bench").first()
        or do_create_user("bench", role=Role.STAFF, department=department, actor=None)[0]
    )
    model = Model.objects.filter(name="bench-model").first() or do_create_model(
        "bench-model", served_name="fixture-model", actor=None
    )
    vllm_model = Model.objects.filter(name="bench-vllm").first() or do_create_model(
        "bench-vllm", served_name="enclave-fixture", actor=None
    )
    for alias, port in upstreams.items():
        deployment = do_create_deployment(
            f"bench-{alias}-{suffix}",
            model=vllm_model if alias == "vllm" else model,
            kind="vllm-cpu",
            endpoint=f"http://127.0.0.1:{port}",
            max_context=4096,
            max_concurrency=4096,
            actor=None,
        )
        do_set_route(department, alias, [TargetSpec(deployment)], actor=None)
    del Deployment
    return do_create_api_key(user, name=f"bench-{suffix}", expires_at=None, actor=None).secret


def audit_write_ms(database_url: str, count: int = 500) -> tuple[float, float]:
    """p50/p99 of one audit event written alone through the gateway's own AuditWriter (its statement, its
    table, its event loop): the floor under the gateway's added latency at one client, since every answer
    waits for its event's commit (decision 0351)."""
    import uvloop

    from appliance.gateway.audit_writer import AuditRow, AuditWriter

    async def run() -> list[float]:
        writer = AuditWriter(database_url)
        await writer.start()
        times = []
        try:
            for _ in range(count):
                row = AuditRow(
                    "bench.audit_probe",
                    "ok",
                    actor="bench",
                    department="Bench",
                    target_type="alias",
                    target_id="default",
                    ip="127.0.0.1",
                    data={"endpoint": "/v1/chat/completions", "alias": "default", "status": 200},
                )
                started = time.perf_counter()
                await writer.write(row)
                times.append(time.perf_counter() - started)
        finally:
            await writer.stop()
        return times[count // 10 :]  # the first ones include the writers' connects

    times = uvloop.run(run())
    return pct(times, 0.5), pct(times, 0.99)


def vllm_engine() -> Any | None:
    """The real vLLM CPU engine with the fixture model (not started yet), if `make engine` ran."""
    python = ROOT / ".venv-engine" / "bin" / "python"
    model = ROOT / "build" / "fixture-model"
    if not python.is_file() or not (model / "manifest.json").is_file():
        return None
    from appliance.engines import VllmCpuEngine

    return VllmCpuEngine(
        name="bench-vllm", model=model, served_model_name="enclave-fixture", port=free_port(), python=python
    )


async def vllm_pair(direct_port: int, gw_port: int, key: str, model: str, count: int) -> dict[str, float]:
    """Alternate direct and gateway requests to the real engine: unary latency and streamed first token."""
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16, "ignore_eos": True}
    direct = http_request(direct_port, "/v1/chat/completions", {**body, "model": model}, "none")
    via = http_request(gw_port, "/v1/chat/completions", {**body, "model": "vllm"}, key)
    direct_s = http_request(direct_port, "/v1/chat/completions", {**body, "model": model, "stream": True}, "x")
    via_s = http_request(gw_port, "/v1/chat/completions", {**body, "model": "vllm", "stream": True}, key)
    conns = {name: Conn(port) for name, port in (("d", direct_port), ("g", gw_port))}
    for conn in conns.values():
        await conn.open()
    out: dict[str, list[float]] = {"d": [], "g": [], "ds": [], "gs": []}
    for _ in range(count):
        for name, raw, conn in (
            ("d", direct, conns["d"]),
            ("g", via, conns["g"]),
            ("ds", direct_s, conns["d"]),
            ("gs", via_s, conns["g"]),
        ):
            status, first, total = await conn.request(raw)
            assert status == 200, status
            out[name].append(first if name.endswith("s") else total)
    for conn in conns.values():
        conn.close()
    return {
        "direct_p50_ms": pct(out["d"], 0.5),
        "gateway_p50_ms": pct(out["g"], 0.5),
        "direct_ttft_p50_ms": pct(out["ds"], 0.5),
        "gateway_ttft_p50_ms": pct(out["gs"], 0.5),
        "requests_each": count,
    }


def start_litellm(binary: str, upstream_port: int, log_dir: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = log_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: default\n"
        "    litellm_params:\n"
        "      model: openai/fixture-model\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: none\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"})
    proc = start(
        [
            binary,
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
        ],
        log_dir / "litellm.log",
        env,
    )
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def open_streams(port: int, raw: bytes, count: int) -> list[Conn]:
    """Open `count` streams and wait for each one's first event; the streams stay open."""
    conns = [Conn(port) for _ in range(count)]
    for i in range(0, count, 100):
        await asyncio.gather(*(c.open() for c in conns[i : i + 100]))

    async def first_event(conn: Conn) -> None:
        assert conn.reader is not None
        assert conn.writer is not None
        conn.writer.write(raw)
        head = await conn.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:80]
        await conn.reader.readuntil(b"data:")

    await asyncio.gather(*(first_event(c) for c in conns))
    return conns


def print_table(results: dict[str, Any], args: argparse.Namespace, log_dir: Path) -> None:
    c1, t = results["c1"], results["ttft_c10"]
    nan = float("nan")
    rows = [
        (
            "p50 latency, 1 client (ms)",
            c1["direct_p50_ms"],
            c1["gateway_p50_ms"],
            c1["floor_p50_ms"],
            c1["litellm_p50_ms"],
        ),
        (
            "p99 latency, 1 client (ms)",
            c1["direct_p99_ms"],
            c1["gateway_p99_ms"],
            c1["floor_p99_ms"],
            c1["litellm_p99_ms"],
        ),
    ]
    for clients in (10, 100):
        row = results[f"c{clients}"]
        rows.append(
            (
                f"requests/s, {clients} clients",
                row["direct_rps"],
                row["gateway_rps"],
                row["floor_rps"],
                row["litellm_rps"],
            )
        )
    rows.append(("TTFT p50, 10 streams (ms)", t["direct_p50_ms"], t["gateway_p50_ms"], t["floor_p50_ms"], nan))
    print(f"\nGateway benchmark ({args.workers} workers each; logs in {log_dir})")
    print(f"{'measure':<34}{'direct':>12}{'gateway':>12}{'floor':>12}{'litellm':>12}")
    for name, direct, gateway, floor, litellm in rows:
        print(f"{name:<34}{direct:>12.2f}{gateway:>12.2f}{floor:>12.2f}{litellm:>12.2f}")
    print(
        f"\nadded at 1 client: p50 {results['added_p50_ms_c1']} ms, p99 {results['added_p99_ms_c1']} ms (goals 0.5 / 2)"
    )
    print(
        f"requests/s at 100 clients: {results['rps_ratio_vs_litellm_c100']}x LiteLLM (goal 10x), "
        f"{results['rps_ratio_vs_direct_c100']:.0%} of direct (goal 25%)"
    )
    print(f"TTFT added at 10 streams: {results['ttft_added_ms_c10']} ms (goal 1)")
    print(
        f"reference: one audit event written alone by the gateway's AuditWriter: p50 "
        f"{results['audit_write_alone_p50_ms']} ms, p99 {results['audit_write_alone_p99_ms']} ms "
        "(every answer waits for its event's commit)"
    )
    print(
        f"floor (bench/gateway_floor.py: the same gunicorn worker and aiohttp client forwarding bytes, no gateway "
        f"logic, no audit): added p50 {results['floor_added_p50_ms_c1']} ms, p99 {results['floor_added_p99_ms_c1']} ms "
        f"at 1 client; {results['floor_rps_ratio_vs_direct_c100']:.0%} of direct at 100 clients; TTFT added "
        f"{results['floor_ttft_added_ms_c10']} ms at 10 streams"
    )
    print(f"gateway RSS with {args.streams} open streams: {results['rss_mib_1000_streams']} MiB (goal < 1024)")
    v = results.get("vllm_cpu")
    if v:
        print(
            f"real vLLM CPU engine, 1 client, 16 tokens: direct {v['direct_p50_ms']:.1f} ms, "
            f"gateway {v['gateway_p50_ms']:.1f} ms; first token direct {v['direct_ttft_p50_ms']:.1f} ms, "
            f"gateway {v['gateway_ttft_p50_ms']:.1f} ms"
        )
    else:
        print("real vLLM CPU engine: not measured (run `make engine` first, or --no-vllm was given)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--litellm", required=True, help="path of the litellm executable (build/litellm-venv)")
    parser.add_argument("--out", default="bench-results/gateway.json")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers and LiteLLM workers")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each throughput run")
    parser.add_argument("--c1-requests", type=int, default=1500)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--vllm-requests", type=int, default=20)
    parser.add_argument("--no-vllm", action="store_true", help="skip the real vLLM CPU engine part")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/enclave_bench"),
    )
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    supervisor: Any = None
    try:
        fast, fast_port = start_upstream(log_dir, "--chunks", "8")
        slow, slow_port = start_upstream(log_dir, "--chunks", "120", "--chunk-delay", "0.25")
        procs += [fast, slow]
        # LiteLLM takes a while to import: start it first, wait for it last.
        litellm, ll_port = start_litellm(args.litellm, fast_port, log_dir, args.workers)
        procs.append(litellm)
        engine = vllm_engine() if not args.no_vllm else None
        upstreams = {"default": fast_port, "slow": slow_port}
        if engine is not None:
            upstreams["vllm"] = engine.port
        key = prepare_database(args.database_url, upstreams)
        gw_port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": args.database_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/6"),
            "ENCLAVE_GATEWAY_WORKERS": str(args.workers),
        }
        gateway = start_gunicorn("appliance.gateway.asgi:app", gw_port, args.workers, log_dir / "gateway.log", env)
        procs.append(gateway)
        floor_port = free_port()
        floor_env = {**env, "BENCH_FLOOR_UPSTREAM": f"http://127.0.0.1:{fast_port}"}
        floor = start_gunicorn("bench.gateway_floor:app", floor_port, args.workers, log_dir / "floor.log", floor_env)
        procs.append(floor)
        wait_http(gw_port, "/healthz", 60, gateway)
        wait_http(floor_port, "/health", 60, floor)
        wait_http(ll_port, "/health/liveliness", 420, litellm)

        body = {"model": "default", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8}
        raw_direct = http_request(fast_port, "/v1/chat/completions", {**body, "model": "fixture-model"}, "none")
        raw_gw = http_request(gw_port, "/v1/chat/completions", body, key)
        raw_ll = http_request(ll_port, "/v1/chat/completions", body, "sk-bench-master")
        # The floor forwards the body unchanged, so it carries the upstream's own model name, as direct does.
        raw_floor = http_request(floor_port, "/v1/chat/completions", {**body, "model": "fixture-model"}, "none")
        stream_body = {**body, "stream": True}
        raw_direct_s = http_request(
            fast_port, "/v1/chat/completions", {**stream_body, "model": "fixture-model"}, "none"
        )
        raw_gw_s = http_request(gw_port, "/v1/chat/completions", stream_body, key)
        raw_floor_s = http_request(
            floor_port, "/v1/chat/completions", {**stream_body, "model": "fixture-model"}, "none"
        )

        results: dict[str, Any] = {"workers": args.workers, "litellm_version": "1.106.0"}
        # Warm-up (connections, caches, LiteLLM's lazy imports).
        for port, raw in ((fast_port, raw_direct), (gw_port, raw_gw), (ll_port, raw_ll), (floor_port, raw_floor)):
            asyncio.run(sequential(port, raw, 50))

        # 1 client: latency, direct and through the gateway, in alternating blocks.
        direct_c1: list[float] = []
        gw_c1: list[float] = []
        floor_c1: list[float] = []
        ll_c1: list[float] = []
        block = max(50, args.c1_requests // 10)
        for _ in range(args.c1_requests // block):
            direct_c1 += asyncio.run(sequential(fast_port, raw_direct, block))
            gw_c1 += asyncio.run(sequential(gw_port, raw_gw, block))
            floor_c1 += asyncio.run(sequential(floor_port, raw_floor, block))
        ll_c1 = asyncio.run(sequential(ll_port, raw_ll, 300))
        results["c1"] = {
            "direct_p50_ms": pct(direct_c1, 0.5),
            "direct_p99_ms": pct(direct_c1, 0.99),
            "gateway_p50_ms": pct(gw_c1, 0.5),
            "gateway_p99_ms": pct(gw_c1, 0.99),
            "floor_p50_ms": pct(floor_c1, 0.5),
            "floor_p99_ms": pct(floor_c1, 0.99),
            "litellm_p50_ms": pct(ll_c1, 0.5),
            "litellm_p99_ms": pct(ll_c1, 0.99),
        }
        audit_p50, audit_p99 = audit_write_ms(args.database_url)
        results["audit_write_alone_p50_ms"] = round(audit_p50, 3)
        results["audit_write_alone_p99_ms"] = round(audit_p99, 3)
        results["added_p50_ms_c1"] = added_ms(gw_c1, direct_c1, 0.5)
        results["added_p99_ms_c1"] = added_ms(gw_c1, direct_c1, 0.99)
        results["litellm_added_p50_ms_c1"] = added_ms(ll_c1, direct_c1, 0.5)
        results["floor_added_p50_ms_c1"] = added_ms(floor_c1, direct_c1, 0.5)
        results["floor_added_p99_ms_c1"] = added_ms(floor_c1, direct_c1, 0.99)

        # 10 and 100 clients: throughput.
        for clients in (10, 100):
            row = {}
            for name, port, raw in (
                ("direct", fast_port, raw_direct),
                ("gateway", gw_port, raw_gw),
                ("floor", floor_port, raw_floor),
                ("litellm", ll_port, raw_ll),
            ):
                rps, _firsts, errors = asyncio.run(closed_loop(port, raw, clients, args.seconds))
                row[f"{name}_rps"] = round(rps, 1)
                row[f"{name}_errors"] = errors
            results[f"c{clients}"] = row
        c100 = results["c100"]
        results["rps_ratio_vs_litellm_c100"] = round(c100["gateway_rps"] / max(c100["litellm_rps"], 1e-9), 2)
        results["rps_ratio_vs_direct_c100"] = round(c100["gateway_rps"] / max(c100["direct_rps"], 1e-9), 3)
        results["floor_rps_ratio_vs_direct_c100"] = round(c100["floor_rps"] / max(c100["direct_rps"], 1e-9), 3)

        # Time to first token with 10 streaming clients.
        _rps, direct_first, _e = asyncio.run(closed_loop(fast_port, raw_direct_s, 10, args.seconds / 2))
        _rps, gw_first, _e = asyncio.run(closed_loop(gw_port, raw_gw_s, 10, args.seconds / 2))
        _rps, floor_first, _e = asyncio.run(closed_loop(floor_port, raw_floor_s, 10, args.seconds / 2))
        results["ttft_c10"] = {
            "direct_p50_ms": pct(direct_first, 0.5),
            "gateway_p50_ms": pct(gw_first, 0.5),
            "floor_p50_ms": pct(floor_first, 0.5),
        }
        results["ttft_added_ms_c10"] = added_ms(gw_first, direct_first, 0.5)
        results["floor_ttft_added_ms_c10"] = added_ms(floor_first, direct_first, 0.5)

        # 1,000 open streams through the gateway (the slow upstream keeps them open ~30 s).
        before = rss_mib(gateway.pid)
        slow_raw = http_request(gw_port, "/v1/chat/completions", {**stream_body, "model": "slow"}, key)

        async def hold() -> float:
            conns = await open_streams(gw_port, slow_raw, args.streams)
            measured = rss_mib(gateway.pid)
            for c in conns:
                c.close()
            return measured

        results["rss_mib_idle"] = round(before, 1)
        results["rss_mib_1000_streams"] = round(asyncio.run(hold()), 1)

        # The real vLLM CPU engine, direct vs through the gateway (alternating, one client).
        # Started only now: its start-up would otherwise load the CPU under the measurements above.
        if engine is not None:
            from appliance.engines import RestartPolicy, Supervisor

            supervisor = Supervisor(log_dir / "engines", RestartPolicy(initial_delay_s=0.5, max_delay_s=5.0))
            supervisor.start(engine)
            supervisor.wait_ready(engine.name, timeout=600)
            served = engine.served_model_name
            asyncio.run(vllm_pair(engine.port, gw_port, key, served, 3))
            results["vllm_cpu"] = asyncio.run(vllm_pair(engine.port, gw_port, key, served, args.vllm_requests))
    finally:
        for proc in reversed(procs):
            stop(proc)
        if supervisor is not None:
            supervisor.stop_all()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print_table(results, args, log_dir)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
