"""Last-layer attention probabilities without materialising every layer's attention.

3DS token importance (methods.md, Stage 2) needs ``A[h, q, j]`` of the last transformer layer
only. Asking transformers for ``output_attentions=True`` forces the eager kernel in every
layer and returns ``layers x heads x L x L`` matrices. Instead the model runs with its fast
kernel (sdpa) and a forward pre-hook on the last attention module records that module's
inputs (hidden states, rotary cos/sin); :func:`attention_probs` then recomputes
``softmax(q k^T * scaling + causal mask)`` for that one layer, one sequence at a time.

Supported: attention modules with ``q_proj``/``k_proj`` and rotary ``position_embeddings``
passed in by the decoder layer (Llama, Mistral, Qwen2/3, SmolLM, Gemma, Phi-3 style); optional
``q_norm``/``k_norm`` (Qwen3) are applied. Tests check equality with eager attention.
"""

from __future__ import annotations

from typing import Any

import torch


def last_attention_module(model: Any) -> torch.nn.Module:
    body = getattr(model, getattr(model, "base_model_prefix", "model"), model)
    layers = getattr(body, "layers", None)
    if layers is None or len(layers) == 0:
        raise TypeError(f"model {type(model).__name__} has no decoder `layers`; token importance cannot be computed")
    attn = getattr(layers[-1], "self_attn", None)
    if attn is None or not hasattr(attn, "q_proj") or not hasattr(attn, "k_proj"):
        raise TypeError(
            f"the last layer of {type(model).__name__} has no self_attn.q_proj/k_proj; token importance needs a "
            "Llama-style attention module"
        )
    return attn


class LastLayerCapture:
    """Context manager recording the last attention module's inputs during a forward pass."""

    def __init__(self, model: Any):
        self.module = last_attention_module(model)
        self.hidden: torch.Tensor | None = None
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        pos = kwargs.get("position_embeddings")
        if pos is None and len(args) > 1:
            pos = args[1]
        if hidden is None or pos is None:
            raise TypeError("the last attention module was called without hidden_states/position_embeddings")
        self.hidden = hidden.detach()
        self.cos, self.sin = (p.detach() for p in pos)

    def __enter__(self) -> "LastLayerCapture":
        self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def probs(self, row: int, length: int) -> torch.Tensor:
        """Attention probabilities ``[heads, length, length]`` (float32) of sequence ``row``'s
        first ``length`` tokens (right padding beyond them is ignored)."""
        if self.hidden is None:
            raise RuntimeError("no forward pass was captured")
        # cos/sin have batch size 1 when every row shares the same position ids.
        pos_row = row if self.cos.shape[0] > 1 else 0
        with torch.no_grad():
            return attention_probs(
                self.module, self.hidden[row, :length], self.cos[pos_row, :length], self.sin[pos_row, :length]
            )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def attention_probs(module: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T * scaling)`` with a causal mask for one unpadded sequence.
    ``hidden``: ``[L, hidden]``; ``cos``/``sin``: ``[L, head_dim]``."""
    length = hidden.shape[0]
    head_dim = module.head_dim
    q = module.q_proj(hidden).view(length, -1, head_dim)
    k = module.k_proj(hidden).view(length, -1, head_dim)
    if getattr(module, "q_norm", None) is not None:
        q = module.q_norm(q)
    if getattr(module, "k_norm", None) is not None:
        k = module.k_norm(k)
    q, k = q.transpose(0, 1).float(), k.transpose(0, 1).float()  # [heads, L, d]
    cos, sin = cos.float()[None], sin.float()[None]
    rot = cos.shape[-1]  # partial rotary (Phi-style) rotates only the first `rot` dims
    q = torch.cat((q[..., :rot] * cos + _rotate_half(q[..., :rot]) * sin, q[..., rot:]), dim=-1)
    k = torch.cat((k[..., :rot] * cos + _rotate_half(k[..., :rot]) * sin, k[..., rot:]), dim=-1)
    groups = q.shape[0] // k.shape[0]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=0)
    scores = torch.matmul(q, k.transpose(-1, -2)) * float(module.scaling)
    causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.softmax(scores, dim=-1)


def token_importance(probs: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """3DS token importance ``I(j)`` for ``probs`` ``[H, L, L]``.

    ``mean`` (methods.md): ``mean_h( sum_{q >= j} A[h, q, j] / (L - j) )``, the mean attention
    token ``j`` receives from itself and every later token. ``max`` (the authors' variant):
    ``mean_h( max_{q >= j} A[h, q, j] )``."""
    if kind == "max":
        # causal masking makes rows q < j zero, so the max over all rows is the max over q >= j
        return probs.max(dim=1).values.mean(dim=0)
    if kind != "mean":
        raise ValueError(f"token importance kind {kind!r} is unknown; use 'mean' or 'max'")
    length = probs.shape[-1]
    received = probs.sum(dim=1)  # [H, L]; causal masking makes rows q < j zero
    counts = torch.arange(length, 0, -1, device=probs.device, dtype=received.dtype)  # L - j
    return (received / counts).mean(dim=0)
