"""enclavectl hardware | engine plan | engine units | engine serve-fixture.

`--nvidia-smi-csv FILE` and `--proc DIR` replace live detection (nvidia-smi's CSV, a /proc-like
directory with meminfo and cpuinfo): for planning another machine, and for the tests (no GPU here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from appliance import hardware
from appliance.engines.base import EngineAdapter
from appliance.engines.errors import EngineError
from appliance.engines.llama_cpp import cpu_fixture_engine
from appliance.engines.supervisor import Supervisor
from appliance.engines.systemd import TEMPLATE_UNIT_NAME, dropin_path, render_dropin, render_template_unit
from appliance.engines.vllm import VllmCpuEngine

__all__ = ["register"]

GIB = 1024**3


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nvidia-smi-csv", type=Path, help="read GPUs from this nvidia-smi CSV instead")
    parser.add_argument("--proc", type=Path, default=Path("/proc"), help="directory with meminfo and cpuinfo")
    parser.add_argument("--session-context", type=int, help="tokens per session for the plan (default 32768)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hw = subparsers.add_parser("hardware", help="detected hardware, profile, engine and capacity plan")
    _add_source_options(hw)
    hw.add_argument("--json", action="store_true", help="print JSON instead of text")
    hw.set_defaults(func=_guard(_hardware))

    engine = subparsers.add_parser("engine", help="inference engines: plan, systemd units, local fixture engine")
    commands = engine.add_subparsers(dest="engine_command", required=True, metavar="COMMAND")
    plan = commands.add_parser("plan", help="the engine instances this hardware runs, with exact command lines")
    _add_source_options(plan)
    plan.add_argument("--json", action="store_true", help="print JSON instead of text")
    plan.set_defaults(func=_guard(_plan))
    units = commands.add_parser("units", help="write the systemd template unit and one drop-in per engine")
    _add_source_options(units)
    units.add_argument("--out", type=Path, required=True, help="root to write etc/systemd/system/... under")
    units.set_defaults(func=_guard(_units))
    serve = commands.add_parser(
        "serve-fixture", help="run the vLLM CPU engine (or llama-server) on the fixture model until ^C"
    )
    serve.add_argument("--engine", choices=("vllm-cpu", "llama-cpp"), default="vllm-cpu")
    serve.add_argument("--python", type=Path, default=Path(".venv-engine/bin/python"))
    serve.add_argument("--model", type=Path, default=None, help="build/fixture-model or build/fixture-gguf/...gguf")
    serve.add_argument("--llama-server", type=Path, default=Path("build/llama.cpp/bin/llama-server"))
    serve.add_argument("--port", type=int, default=None, help="8100 (vLLM) or 8101 (llama.cpp)")
    serve.add_argument("--log-dir", type=Path, default=Path("var/engines"))
    serve.set_defaults(func=_guard(_serve_fixture))


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = func(args)
        except (EngineError, hardware.HardwareError) as exc:
            print(f"error [{exc.code}]: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error [engine.io]: {exc}", file=sys.stderr)
            return 2
        return result

    return run


def _report(args: argparse.Namespace) -> hardware.HardwareReport:
    gpus = None if args.nvidia_smi_csv is None else hardware.parse_nvidia_smi_csv(args.nvidia_smi_csv.read_text())
    return hardware.hardware_report(args.proc, gpus=gpus, session_context=args.session_context)


def _hardware(args: argparse.Namespace) -> int:
    report = _report(args)
    host, choice, plan = report.host, report.choice, report.plan
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return 0
    print(f"CPU:      {host.cpu_model} ({host.cpu_count} cores available)")
    print(f"Memory:   {host.memory_bytes / GIB:.1f} GiB ({host.memory_available_bytes / GIB:.1f} GiB available)")
    for gpu in host.gpus or ():
        memory = "unified memory" if gpu.memory_bytes is None else f"{gpu.memory_bytes / GIB:.1f} GiB"
        print(f"GPU {gpu.index}:    {gpu.name}, {memory}, compute {gpu.compute_cap or '?'}")
    if not host.gpus:
        print("GPUs:     none")
    print(f"Profile:  {choice.profile} ({choice.reason})")
    print(f"Engine:   {choice.engine}")
    print(f"Weights:  {choice.weights.name}, {choice.weights.size_bytes / GIB:.1f} GiB")
    print(
        f"Capacity: largest context {plan.largest_context:,} tokens; "
        f"{plan.concurrent_sessions:,} concurrent sessions of {plan.session_context:,} tokens"
    )
    in_host = plan.weights_in_host_bytes
    spill = f" ({in_host / GIB:.1f} GiB of them in host memory)" if in_host else ""
    print(
        f"          KV cache {plan.kv_budget_bytes / GIB:.1f} GiB at {plan.kv_bytes_per_token:,} B/token "
        f"(pool {plan.memory_pool_bytes / GIB:.1f} GiB - weights {plan.weights_bytes / GIB:.1f} GiB{spill}"
        f" - reserve {plan.reserve_bytes / GIB:.1f} GiB)"
    )
    for note in plan.notes:
        print(f"Note:     {note}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    launches = [e.launch() for e in _report(args).engines]
    if args.json:
        print(json.dumps([asdict(launch) for launch in launches], indent=2, default=str))
        return 0
    for launch in launches:
        print(f"{launch.name}: {launch.kind} serving {launch.served_model_name} on {launch.base_url}")
        print(f"  health {launch.health_url}; metrics {launch.metrics_url or 'none'}")
        print(f"  priority {launch.priority}; max context {launch.max_context:,} tokens")
        print(f"  thinking max {'yes' if launch.supports_think_max else 'no (needs 393,216 tokens)'}")
        print("  env  " + " ".join(f"{k}={v}" for k, v in sorted(launch.env.items())))
        print("  argv " + " ".join(launch.argv))
    return 0


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _units(args: argparse.Namespace) -> int:
    engines = _report(args).engines
    unit_dir = args.out / "etc" / "systemd" / "system"
    _write_atomic(unit_dir / TEMPLATE_UNIT_NAME, render_template_unit())
    print(unit_dir / TEMPLATE_UNIT_NAME)
    for engine in engines:
        path = args.out / str(dropin_path(engine.name)).lstrip("/")
        _write_atomic(path, render_dropin(engine))
        print(path)
    return 0


def _serve_fixture(args: argparse.Namespace) -> int:
    engine: EngineAdapter
    if args.engine == "llama-cpp":
        engine = cpu_fixture_engine(
            binary=args.llama_server.absolute(),
            model=(args.model or Path("build/fixture-gguf/enclave-fixture.gguf")).resolve(),
            port=args.port or 8101,
        )
        label = "llama.cpp llama-server"
    else:
        engine = VllmCpuEngine(
            name="fixture",
            model=(args.model or Path("build/fixture-model")).resolve(),
            served_model_name="enclave-fixture",
            port=args.port or 8100,
            python=args.python.absolute(),
        )
        label = "vLLM CPU"
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with Supervisor(args.log_dir) as supervisor:
        supervisor.start(engine)
        print(f"starting {label} on {engine.base_url} (log: {args.log_dir / 'fixture.log'})", flush=True)
        print("  " + " ".join(engine.argv()), flush=True)
        supervisor.wait_ready("fixture", timeout=900)
        print(f"ready: {engine.base_url}/v1 serves model enclave-fixture; ^C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0
