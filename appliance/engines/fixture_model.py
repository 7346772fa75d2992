"""Generate the tiny fixture model that the real vLLM CPU engine serves in dev, CI and the demo.

Run it with the ENGINE venv's interpreter (it needs torch, tokenizers and safetensors, which the
console's venv does not have), as a script so that no other part of `appliance` is imported:

    .venv-engine/bin/python appliance/engines/fixture_model.py --out build/fixture-model
    .venv-engine/bin/python appliance/engines/fixture_model.py --verify build/fixture-model

The model is Llama-shaped (hidden 128, 2 heads of 64, 1 KV head, 2 layers, intermediate 256), with a
512-entry byte-level BPE tokenizer and a chat template; its weights are random from a fixed seed, so
its output is noise, but it exercises every real code path of the engine. Nothing comes from a hub.
Every file is produced deterministically: two runs give byte-identical files, recorded with their
SHA-256 in manifest.json (written last, atomically). See docs/decisions/0300-*.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

SEED = 20261122
GENERATOR_VERSION = 1
VOCAB_SIZE = 512
HIDDEN = 128
HEADS = 2
KV_HEADS = 1
HEAD_DIM = HIDDEN // HEADS  # 64: the CPU attention kernels refuse head_dim 16
LAYERS = 2
INTERMEDIATE = 256
MAX_POSITIONS = 4096
SPECIAL_TOKENS = ("<|begin|>", "<|end|>", "<|start|>", "<|pad|>")
BOS, EOS, START, PAD = SPECIAL_TOKENS
MANIFEST = "manifest.json"

# Jinja chat template; `thinking` comes from chat_template_kwargs (the gateway maps thinking modes to it).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant\n"
    "{% if thinking is defined and thinking %}<think>\n{% endif %}{% endif %}"
)

# Fixed training text for the BPE merges (English, clinical and legal words; the model only needs
# a plausible tokenizer, not a good one).
CORPUS = (
    "The patient was admitted to the emergency department with chest pain and shortness of breath. "
    "The discharge summary lists the medication, the dose and the follow-up appointment. "
    "The court finds that the contract was signed by both parties and that the claim is dismissed. "
    "Hello, how are you today? I am fine, thank you. Please summarise the following document. "
    "The appliance answers every question on premises; nothing leaves the building. "
    "def main(): return 0  # code, numbers 0123456789 and punctuation: ,.;:!?()[]{}\"'-+=/\\ "
) * 4


class FixtureModelError(Exception):
    code = "fixture_model.mismatch"


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which tokenizers' ByteLevel uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _pretokenize(text: str, alphabet: dict[int, str]) -> list[tuple[str, ...]]:
    """Split on spaces the way ByteLevel does (a word keeps its leading space), map bytes to symbols."""
    words: list[str] = []
    current = ""
    for ch in text:
        if ch == " " and current:
            words.append(current)
            current = ""
        current += ch
    if current:
        words.append(current)
    return [tuple(alphabet[b] for b in w.encode("utf-8")) for w in words]


def train_bpe(vocab_size: int = VOCAB_SIZE) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Deterministic byte-level BPE: most frequent pair first, ties broken by the pair itself."""
    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for byte in range(256):
        vocab[alphabet[byte]] = len(vocab)
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    counts: dict[tuple[str, ...], int] = {}
    for word in _pretokenize(CORPUS, alphabet):
        counts[word] = counts.get(word, 0) + 1
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:
        pairs: dict[tuple[str, str], int] = {}
        for word, n in counts.items():
            for a, b in itertools.pairwise(word):
                pairs[(a, b)] = pairs.get((a, b), 0) + n
        if not pairs:
            raise FixtureModelError("the BPE corpus is too small for the vocabulary size")
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        if best[0] + best[1] not in vocab:  # ("a", "bc") and ("ab", "c") make the same symbol
            vocab[best[0] + best[1]] = len(vocab)
        merged: dict[tuple[str, ...], int] = {}
        for word, n in counts.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        counts = merged
    return vocab, merges


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def tokenizer_files() -> dict[str, bytes]:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab, merges = train_bpe()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    config = {
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }
    special_map = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    return {
        "tokenizer.json": tok.to_str(pretty=True).encode("utf-8") + b"\n",
        "tokenizer_config.json": _json_bytes(config),
        "special_tokens_map.json": _json_bytes(special_map),
    }


def model_config() -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "num_hidden_layers": LAYERS,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": MAX_POSITIONS,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": SPECIAL_TOKENS.index(BOS) + 256,
        "eos_token_id": SPECIAL_TOKENS.index(EOS) + 256,
        "pad_token_id": SPECIAL_TOKENS.index(PAD) + 256,
        "initializer_range": 0.02,
    }


def weight_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB_SIZE, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (HIDDEN,)
        shapes[p + "self_attn.q_proj.weight"] = (HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "self_attn.k_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "self_attn.v_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "self_attn.o_proj.weight"] = (HIDDEN, HEADS * HEAD_DIM)
        shapes[p + "post_attention_layernorm.weight"] = (HIDDEN,)
        shapes[p + "mlp.gate_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "mlp.up_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "mlp.down_proj.weight"] = (HIDDEN, INTERMEDIATE)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB_SIZE, HIDDEN)
    return shapes


def weights_file(seed: int = SEED) -> bytes:
    import torch
    from safetensors.torch import save

    gen = torch.Generator(device="cpu").manual_seed(seed)
    tensors = {}
    for name, shape in weight_shapes().items():  # fixed order: the generator's stream is consumed in it
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.float32)
        else:
            t = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02
        tensors[name] = t.to(torch.bfloat16).contiguous()
    # One metadata key only: safetensors writes its metadata map in hash order, which varies per process.
    data: bytes = save(tensors, metadata={"format": "pt"})
    return data


def generate_files(seed: int = SEED) -> dict[str, bytes]:
    files = {
        "config.json": _json_bytes(model_config()),
        "generation_config.json": _json_bytes(
            {"bos_token_id": model_config()["bos_token_id"], "eos_token_id": model_config()["eos_token_id"]}
        ),
        "model.safetensors": weights_file(seed),
    }
    files.update(tokenizer_files())
    return files


def manifest_for(files: dict[str, bytes], seed: int = SEED) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        },
    }


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model(out: Path, seed: int = SEED) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # no manifest while files are half written
    files = generate_files(seed)
    for name, data in files.items():
        _write_atomic(out / name, data)
    manifest = manifest_for(files, seed)
    _write_atomic(out / MANIFEST, _json_bytes(manifest))
    return manifest


def verify_model(directory: Path) -> None:
    """Check every file against manifest.json; raise FixtureModelError naming the first mismatch."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise FixtureModelError(f"{directory}: no readable {MANIFEST} ({exc}); run `make engine`") from exc
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise FixtureModelError(f"{path}: missing; run `make engine`")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise FixtureModelError(f"{path}: sha256 {digest} does not match the manifest; run `make engine`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate or verify Enclave's tiny fixture model")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="directory to (re)generate the model into")
    group.add_argument("--verify", type=Path, help="directory to check against its manifest.json")
    parser.add_argument("--seed", type=int, default=SEED, help="weights seed (another seed: the 'upgraded' model)")
    args = parser.parse_args(argv)
    if args.verify is not None:
        try:
            verify_model(args.verify)
        except FixtureModelError as exc:
            print(f"error [{exc.code}]: {exc}", file=sys.stderr)
            return 1
        print(f"{args.verify}: every file matches {MANIFEST}")
        return 0
    manifest = write_model(args.out, args.seed)
    total = sum(f["size"] for f in manifest["files"].values())
    print(f"fixture model written to {args.out} ({len(manifest['files'])} files, {total} bytes, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
