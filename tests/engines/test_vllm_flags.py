"""The rendered vLLM command lines are accepted by vLLM's own CLI parser (vLLM 0.32 in .venv-engine).

The CUDA build cannot run here (no GPU), but its argument parser is the same code as the CPU build's,
so every flag the CUDA adapter renders for each profile is parsed by the real thing.
"""

import json
import subprocess
from pathlib import Path

import pytest

from appliance import hardware
from appliance.engines import VllmCpuEngine, VllmCudaEngine
from tests.fixtures.engine import ENGINE_PYTHON

pytestmark = pytest.mark.engine
DATA = Path(__file__).parent / "data"

PARSE = """
import contextlib, io, json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = make_arg_parser(FlexibleArgumentParser())
out = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            a = parser.parse_args(argv[3:])  # drop "python -m vllm.entrypoints.openai.api_server"
    except SystemExit:
        out.append({"error": err.getvalue()})
        continue
    out.append({k: getattr(a, k) for k in ("kv_cache_dtype", "block_size", "tokenizer_mode", "reasoning_parser",
                "tool_call_parser", "enable_auto_tool_choice", "data_parallel_size", "enable_expert_parallel",
                "moe_backend", "speculative_config", "scheduling_policy", "max_model_len", "port", "host")})
print(json.dumps(out, default=str))
"""


def parse_with_vllm(argvs: list[tuple[str, ...]]) -> list[dict]:
    result = subprocess.run(
        [str(ENGINE_PYTHON), "-c", PARSE],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_profile_renders_flags_vllm_accepts() -> None:
    argvs = []
    for csv in ("h200x8", "b200x4"):
        host = hardware.detect_host(
            DATA / "proc-dgx", gpus=hardware.parse_nvidia_smi_csv((DATA / f"{csv}.csv").read_text())
        )
        choice = hardware.choose_profile(host)
        argvs += [e.argv() for e in hardware.engines_for(choice, hardware.plan_capacity(host, choice))]
    mtp = VllmCudaEngine(
        name="mtp",
        model=Path("/m"),
        served_model_name="m",
        port=8200,
        python=Path("/p"),
        data_parallel_size=1,
        expert_parallel=False,
        mtp_speculative_tokens=1,
    )
    cpu = VllmCpuEngine(name="cpu", model=Path("/m"), served_model_name="m", port=8300, python=Path("/p"))
    unknown = ("python", "-m", "x", "--attention_config.use_fp4_indexer_cache=True")  # shows the check can fail
    argvs += [mtp.argv(), cpu.argv(), unknown]
    parsed = parse_with_vllm(argvs)
    h200, second_h200, b200, mtp_parsed, cpu_parsed, refused = parsed
    assert all("error" not in p for p in parsed[:-1]), parsed
    assert "use_fp4_indexer_cache" in refused["error"]
    assert second_h200["port"] == 8101
    for p in (h200, b200):
        assert (p["kv_cache_dtype"], p["block_size"], p["tokenizer_mode"]) == ("fp8", 256, "deepseek_v4")
        assert (p["reasoning_parser"], p["tool_call_parser"]) == ("deepseek_v4", "deepseek_v4")
        assert p["enable_auto_tool_choice"] is True
        assert (p["data_parallel_size"], p["enable_expert_parallel"]) == (4, True)
        assert (p["scheduling_policy"], p["max_model_len"], p["host"]) == ("priority", 1_048_576, "127.0.0.1")
    assert h200["moe_backend"] != "deep_gemm_mega_moe"
    assert b200["moe_backend"] == "deep_gemm_mega_moe"
    assert mtp_parsed["speculative_config"] == {"method": "mtp", "num_speculative_tokens": 1}
    assert (cpu_parsed["port"], cpu_parsed["max_model_len"]) == (8300, 2048)
