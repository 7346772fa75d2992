"""The GGUF fixture (appliance/engines/fixture_gguf.py) is deterministic and is the vLLM fixture's twin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from appliance.engines.fixture_gguf import GGUF_NAME
from appliance.engines.fixture_model import CHAT_TEMPLATE, HIDDEN, LAYERS, MAX_POSITIONS, VOCAB_SIZE
from tests.fixtures.engine import FIXTURE_GGUF, FIXTURE_GGUF_DIR, FIXTURE_MODEL, REPO


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.engines.fixture_gguf", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )


def field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_two_generations_are_byte_identical_and_match_the_built_fixture(tmp_path: Path) -> None:
    for out in ("a", "b"):
        result = run_generator("--out", str(tmp_path / out))
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a" / GGUF_NAME).read_bytes() == (tmp_path / "b" / GGUF_NAME).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [GGUF_NAME, "manifest.json"]
    # ... and identical to what `make fixture-gguf` built for the engine tests.
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (FIXTURE_GGUF_DIR / "manifest.json").read_bytes()
    assert run_generator("--verify", str(FIXTURE_GGUF_DIR)).returncode == 0


def test_another_seed_gives_other_weights(tmp_path: Path) -> None:
    assert run_generator("--out", str(tmp_path / "s"), "--seed", "7").returncode == 0
    other = json.loads((tmp_path / "s" / "manifest.json").read_text())
    built = json.loads((FIXTURE_GGUF_DIR / "manifest.json").read_text())
    assert other["files"][GGUF_NAME]["sha256"] != built["files"][GGUF_NAME]["sha256"]
    assert other["files"][GGUF_NAME]["size"] == built["files"][GGUF_NAME]["size"]


def test_verify_names_a_tampered_file(tmp_path: Path) -> None:
    model = tmp_path / "gguf"
    model.mkdir()
    (model / "manifest.json").write_bytes((FIXTURE_GGUF_DIR / "manifest.json").read_bytes())
    data = bytearray(FIXTURE_GGUF.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    (model / GGUF_NAME).write_bytes(bytes(data))
    result = run_generator("--verify", str(model))
    assert result.returncode == 1
    assert "error [fixture_gguf.mismatch]" in result.stderr
    assert GGUF_NAME in result.stderr


@pytest.mark.engine
def test_metadata_is_the_vllm_fixtures_shape_tokenizer_and_template() -> None:
    reader = gguf.GGUFReader(FIXTURE_GGUF)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.embedding_length") == HIDDEN
    assert field(reader, "llama.block_count") == LAYERS
    assert field(reader, "llama.context_length") == MAX_POSITIONS
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and len(tokens) == VOCAB_SIZE
    # The same vocabulary, ids and merges as the HF tokenizer the vLLM fixture ships (build/fixture-model).
    hf = json.loads((FIXTURE_MODEL / "tokenizer.json").read_text())
    assert {tok: i for i, tok in enumerate(tokens)} == hf["model"]["vocab"] | {
        added["content"]: added["id"] for added in hf["added_tokens"]
    }
    merges = field(reader, "tokenizer.ggml.merges")
    assert merges == [m if isinstance(m, str) else " ".join(m) for m in hf["model"]["merges"]]
    assert field(reader, "tokenizer.ggml.bos_token_id") == tokens.index("<|begin|>")
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokens.index("<|end|>")
    names = [t.name for t in reader.tensors]
    assert names[0] == "token_embd.weight" and names[-1] == "output.weight"
    assert len(names) == 3 + 9 * LAYERS
