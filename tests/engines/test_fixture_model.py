"""The tiny fixture model is generated deterministically by the engine venv's torch/tokenizers."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.engine import ENGINE_PYTHON, FIXTURE_MODEL, REPO

pytestmark = pytest.mark.engine
GENERATOR = REPO / "appliance" / "engines" / "fixture_model.py"


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENGINE_PYTHON), str(GENERATOR), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_two_generations_are_byte_identical_and_match_the_built_model(tmp_path: Path) -> None:
    for out in ("a", "b"):
        result = run_generator("--out", str(tmp_path / out))
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "model.safetensors" in names
    assert "tokenizer.json" in names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # ... and identical to what `make engine` built for the engine tests.
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (FIXTURE_MODEL / "manifest.json").read_bytes()
    assert run_generator("--verify", str(FIXTURE_MODEL)).returncode == 0


def test_verify_names_a_tampered_file(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(FIXTURE_MODEL, model)
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (model / "config.json").write_text(json.dumps(config))
    result = run_generator("--verify", str(model))
    assert result.returncode == 1
    assert "error [fixture_model.mismatch]" in result.stderr
    assert "config.json" in result.stderr


def test_shape_tokenizer_and_chat_template_load_with_transformers() -> None:
    script = f"""
import json
from transformers import AutoConfig, AutoTokenizer
cfg = AutoConfig.from_pretrained({str(FIXTURE_MODEL)!r})
tok = AutoTokenizer.from_pretrained({str(FIXTURE_MODEL)!r})
text = tok.apply_chat_template([{{"role": "user", "content": "Hello, how are you?"}}], tokenize=False,
                               add_generation_prompt=True)
ids = tok("Hello, how are you today?")["input_ids"]
print(json.dumps({{"hidden": cfg.hidden_size, "heads": cfg.num_attention_heads, "kv": cfg.num_key_value_heads,
                  "head_dim": cfg.head_dim, "layers": cfg.num_hidden_layers, "vocab": len(tok),
                  "text": text, "roundtrip": tok.decode(ids), "n_ids": len(ids)}}))
"""
    result = subprocess.run(
        [str(ENGINE_PYTHON), "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert (info["hidden"], info["heads"], info["kv"], info["head_dim"], info["layers"]) == (128, 2, 1, 64, 2)
    assert info["vocab"] == 512
    assert info["text"] == "<|begin|><|start|>user\nHello, how are you?<|end|>\n<|start|>assistant\n"
    assert info["roundtrip"] == "Hello, how are you today?"
    assert info["n_ids"] < len("Hello, how are you today?")  # the BPE merges do merge


def test_another_seed_gives_the_same_model_with_other_weights(tmp_path: Path) -> None:
    """The demo bundle's 'upgraded' model: same files, same shape, different weights."""
    assert run_generator("--out", str(tmp_path / "q4"), "--seed", "20264").returncode == 0
    assert run_generator("--verify", str(tmp_path / "q4")).returncode == 0
    upgraded = json.loads((tmp_path / "q4" / "manifest.json").read_text())
    built = json.loads((FIXTURE_MODEL / "manifest.json").read_text())
    assert upgraded["seed"] == 20264 and built["seed"] != 20264
    assert upgraded["files"].keys() == built["files"].keys()
    assert upgraded["files"]["model.safetensors"]["size"] == built["files"]["model.safetensors"]["size"]
    assert upgraded["files"]["model.safetensors"]["sha256"] != built["files"]["model.safetensors"]["sha256"]
    assert upgraded["files"]["tokenizer.json"] == built["files"]["tokenizer.json"]
