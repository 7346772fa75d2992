"""Generate the tiny GGUF fixture model that the real `llama-server` serves in dev, CI and the appliance image.

Run it with the console venv's interpreter (it needs the pinned `gguf` package and numpy):

    .venv/bin/python -m appliance.engines.fixture_gguf --out build/fixture-gguf
    .venv/bin/python -m appliance.engines.fixture_gguf --verify build/fixture-gguf

It is the GGUF twin of the vLLM fixture (appliance/engines/fixture_model.py): the same Llama shape
(hidden 128, 2 heads of 64, 1 KV head, 2 layers, intermediate 256, 4096 positions), the same 512-entry
byte-level BPE vocabulary and merges, the same special tokens and the same Jinja chat template, all in the
GGUF metadata, so that `llama-server --jinja` serves /v1/chat/completions from this one file. Its weights
are float32 noise from a fixed seed (numpy's PCG64), so the output is noise too. Two runs give a
byte-identical file, recorded with its SHA-256 in manifest.json (written last, atomically).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from appliance.engines.fixture_model import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    HEAD_DIM,
    HEADS,
    HIDDEN,
    INTERMEDIATE,
    KV_HEADS,
    LAYERS,
    MAX_POSITIONS,
    PAD,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
    _json_bytes,
    _write_atomic,
    train_bpe,
)

__all__ = ["GGUF_NAME", "SEED", "FixtureGgufError", "generate", "verify_gguf", "write_gguf"]

SEED = 20261201
GENERATOR_VERSION = 1
GGUF_NAME = "enclave-fixture.gguf"
MANIFEST = "manifest.json"
ARCH = "llama"
RMS_EPS = 1e-5
ROPE_THETA = 10000.0


class FixtureGgufError(Exception):
    code = "fixture_gguf.mismatch"


def tensor_shapes() -> dict[str, tuple[int, ...]]:
    """llama.cpp's tensor names with numpy shapes (rows = output features, as in the HF checkpoint)."""
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (VOCAB_SIZE, HIDDEN)}
    for i in range(LAYERS):
        p = f"blk.{i}."
        shapes[p + "attn_norm.weight"] = (HIDDEN,)
        shapes[p + "attn_q.weight"] = (HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "attn_k.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "attn_v.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "attn_output.weight"] = (HIDDEN, HEADS * HEAD_DIM)
        shapes[p + "ffn_norm.weight"] = (HIDDEN,)
        shapes[p + "ffn_gate.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "ffn_up.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "ffn_down.weight"] = (HIDDEN, INTERMEDIATE)
    shapes["output_norm.weight"] = (HIDDEN,)
    shapes["output.weight"] = (VOCAB_SIZE, HIDDEN)
    return shapes


def generate(path: Path, seed: int = SEED) -> None:
    """Write the GGUF file to `path` (not atomically; write_gguf renames it into place)."""
    import gguf
    import numpy as np

    vocab, merges = train_bpe()
    tokens = sorted(vocab, key=vocab.__getitem__)
    if len(tokens) != VOCAB_SIZE or [vocab[t] for t in tokens] != list(range(VOCAB_SIZE)):
        raise FixtureGgufError("the BPE vocabulary is not dense 0..VOCAB_SIZE-1")
    types = [
        gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL  # type: ignore[attr-defined]
        for t in tokens
    ]

    writer = gguf.GGUFWriter(path, ARCH)  # type: ignore[attr-defined]
    writer.add_name("enclave-fixture")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)  # type: ignore[attr-defined]
    writer.add_context_length(MAX_POSITIONS)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(VOCAB_SIZE)
    # The tokenizer: GPT-2 style byte-level BPE (the HF fixture's ByteLevel pre-tokenizer uses GPT-2's regex).
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in merges])
    writer.add_bos_token_id(vocab[BOS])
    writer.add_eos_token_id(vocab[EOS])
    writer.add_pad_token_id(vocab[PAD])
    writer.add_add_bos_token(False)  # the chat template writes {{ bos_token }} itself
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)
    for name, shape in tensor_shapes().items():  # fixed order: the generator's stream is consumed in it
        if name.endswith("norm.weight"):
            data = np.ones(shape, dtype=np.float32)
        else:
            data = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(np.float32)
        writer.add_tensor(name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_gguf(out: Path, seed: int = SEED) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # no manifest while the file is half written
    with tempfile.TemporaryDirectory(dir=out, prefix=".gguf-") as tmp:
        staged = Path(tmp) / GGUF_NAME
        generate(staged, seed)
        staged.chmod(0o644)
        digest, size = _sha256(staged), staged.stat().st_size
        staged.replace(out / GGUF_NAME)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "gguf_package": version("gguf"),
        "architecture": ARCH,
        "context_length": MAX_POSITIONS,
        "files": {GGUF_NAME: {"sha256": digest, "size": size}},
    }
    _write_atomic(out / MANIFEST, _json_bytes(manifest))
    return manifest


def verify_gguf(directory: Path) -> None:
    """Check the file against manifest.json; raise FixtureGgufError naming the mismatch."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise FixtureGgufError(f"{directory}: no readable {MANIFEST} ({exc}); run `make fixture-gguf`") from exc
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise FixtureGgufError(f"{path}: missing; run `make fixture-gguf`")
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise FixtureGgufError(f"{path}: sha256 {digest} does not match the manifest; run `make fixture-gguf`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate or verify Enclave's tiny GGUF fixture model")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="directory to (re)generate the GGUF fixture into")
    group.add_argument("--verify", type=Path, help="directory to check against its manifest.json")
    parser.add_argument("--seed", type=int, default=SEED, help="weights seed")
    args = parser.parse_args(argv)
    if args.verify is not None:
        try:
            verify_gguf(args.verify)
        except FixtureGgufError as exc:
            print(f"error [{exc.code}]: {exc}", file=sys.stderr)
            return 1
        print(f"{args.verify}: {GGUF_NAME} matches {MANIFEST}")
        return 0
    manifest = write_gguf(args.out, args.seed)
    entry = manifest["files"][GGUF_NAME]
    print(f"GGUF fixture written to {args.out / GGUF_NAME} ({entry['size']} bytes, sha256 {entry['sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
