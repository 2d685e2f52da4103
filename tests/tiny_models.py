"""Tiny random-weight models for shape and equivalence tests (importable from any test:
``from tiny_models import make_tiny_llama``; a module named ``conftest`` is ambiguous)."""

from __future__ import annotations


def make_tiny_llama(vocab_size: int, seed: int = 0, attn_implementation: str = "sdpa"):
    """A 2-layer, hidden-64 random LlamaForCausalLM (fp32, eval mode) for shape and
    equivalence tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        attn_implementation=attn_implementation,
    )
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform predictions; scale the weights up so NLLs differ (and
    # untied, so the model does not just repeat its last input token).
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(20.0)
        model.lm_head.weight.mul_(20.0)
    return model.eval()
