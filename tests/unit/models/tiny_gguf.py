"""A tiny random-weight Llama written as a GGUF file, with the first ``vocab_size`` tokens of
the SmolLM2 vocabulary, its merges among them and its chat template: the shape of the shipped
model in a file of a few MB, for tests that go through transformers' GGUF reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_tiny_gguf(path: Path, smol_tokenizer, vocab_size: int = 1024, eos_token_id: int = 2, seed: int = 0) -> Path:
    """Write the GGUF; ``eos_token_id`` is what the file's metadata claims (2 is ``<|im_end|>``,
    1 is ``<|im_start|>``, the eos a hand conversion of the real model produced)."""
    import gguf

    spec = json.loads(smol_tokenizer.backend_tokenizer.to_str())["model"]
    by_id = sorted(spec["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, i in by_id[:vocab_size]]
    assert [i for _, i in by_id[:vocab_size]] == list(range(vocab_size))
    keep = set(tokens)
    merges = []
    for merge in spec["merges"]:
        a, b = merge if isinstance(merge, list) else merge.split(" ", 1)
        if a in keep and b in keep and a + b in keep:
            merges.append(f"{a} {b}")
    special = set(smol_tokenizer.all_special_ids) | {
        i for i, t in smol_tokenizer.added_tokens_decoder.items() if t.special
    }

    hidden, ffn, heads, kv_heads, layers = 64, 128, 4, 2, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-smollm2-shaped")
    writer.add_block_count(layers)
    writer.add_context_length(2048)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab_size)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(vocab_size)])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(eos_token_id)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(smol_tokenizer.chat_template)

    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    head_dim = hidden // heads
    writer.add_tensor("token_embd.weight", weight(vocab_size, hidden, scale=1.0))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for b in range(layers):
        writer.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{b}.attn_q.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{b}.attn_k.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{b}.attn_v.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{b}.attn_output.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{b}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{b}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{b}.ffn_down.weight", weight(hidden, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
