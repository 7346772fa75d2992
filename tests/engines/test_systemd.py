"""systemd template unit and per-instance drop-ins rendered from the adapters."""

from pathlib import Path

import pytest

from appliance.engines import Ds4Engine, InvalidEngineOption, VllmCpuEngine, VllmCudaEngine
from appliance.engines.systemd import dropin_path, render_dropin, render_template_unit, systemd_quote


def test_ds4_dropin_exact_text() -> None:
    engine = Ds4Engine(name="ds4-0", model=Path("/var/lib/enclave/models/current/ds4flash.gguf"), port=8100)
    assert render_dropin(engine) == (
        "# Engine ds4-0 (ds4, serves deepseek-v4-flash on http://127.0.0.1:8100).\n"
        "# Rendered by appliance.engines.systemd from the engine's adapter; re-render, do not edit.\n"
        "[Unit]\n"
        "Description=Enclave engine ds4-0 (ds4)\n"
        "\n"
        "[Service]\n"
        "Environment=DO_NOT_TRACK=1\n"
        "Environment=HF_HUB_DISABLE_TELEMETRY=1\n"
        "Environment=HF_HUB_OFFLINE=1\n"
        "Environment=TRANSFORMERS_OFFLINE=1\n"
        "Environment=VLLM_NO_USAGE_STATS=1\n"
        "ReadWritePaths=/var/lib/enclave/ds4-kv\n"
        "ExecStart=/opt/enclave/engines/ds4/bin/ds4-server \\\n"
        "    --cuda \\\n"
        "    --model /var/lib/enclave/models/current/ds4flash.gguf \\\n"
        "    --ctx 100000 \\\n"
        "    --host 127.0.0.1 \\\n"
        "    --port 8100 \\\n"
        "    --kv-disk-dir /var/lib/enclave/ds4-kv \\\n"
        "    --kv-disk-space-mb 8192 \\\n"
        "    --warm-weights\n"
    )
    assert str(dropin_path("ds4-0")) == "/etc/systemd/system/enclave-engine@ds4-0.service.d/10-engine.conf"


def test_json_arguments_are_quoted_for_systemd() -> None:
    engine = VllmCudaEngine(
        name="vllm-0",
        model=Path("/models/v4"),
        served_model_name="deepseek-v4-flash",
        port=8100,
        python=Path("/opt/enclave/engines/vllm/bin/python"),
        mtp_speculative_tokens=1,
    )
    text = render_dropin(engine)
    assert '    --compilation-config "{\\"cudagraph_mode\\":\\"FULL_AND_PIECEWISE\\"' in text
    assert '    --speculative-config "{\\"method\\":\\"mtp\\",\\"num_speculative_tokens\\":1}"\n' in text


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("/opt/x", "/opt/x"),
        ("a b", '"a b"'),
        ("100%", '"100%%"'),
        ("$HOME", '"$$HOME"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("", '""'),
    ],
)
def test_systemd_quote(arg: str, quoted: str) -> None:
    assert systemd_quote(arg) == quoted


def test_relative_executable_is_refused_for_systemd() -> None:
    engine = VllmCpuEngine(
        name="cpu", model=Path("m"), served_model_name="m", port=8000, python=Path(".venv-engine/bin/python")
    )
    with pytest.raises(InvalidEngineOption) as info:
        render_dropin(engine)
    assert info.value.code == "engine.invalid_option"


def test_template_unit_is_loopback_only_and_restarts() -> None:
    text = render_template_unit()
    assert "IPAddressDeny=any\nIPAddressAllow=localhost\n" in text
    assert "Restart=on-failure\n" in text
    assert "User=enclave-engine\n" in text
    assert "AssertPathExists=/etc/systemd/system/enclave-engine@%i.service.d/10-engine.conf\n" in text
    assert "\nExecStart=" not in text  # only the instance drop-in says what to run
