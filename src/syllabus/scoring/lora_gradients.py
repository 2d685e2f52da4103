"""Per-sample gradients of the response loss w.r.t. LoRA adapters (peft) on the target model.

``L(z)`` is the mean NLL over the response tokens of ``T = P + y + E`` (the training loss of
one sample, shared templating) and ``theta`` the LoRA adapters: rank 8 on
``q_proj, k_proj, v_proj`` by default (DIQ, arXiv 2508.01450).

Per-sample gradients without one backward per sample: for a LoRA linear layer
``y = W x + s B A x`` the gradient of a sum of per-sample losses w.r.t. ``B``'s output at
token ``t`` of sample ``i`` belongs to sample ``i`` alone, so
``dL_i/dB = sum_t gB[i, t] (A x[i, t])^T`` and ``dL_i/dA = sum_t gA[i, t] x[i, t]^T`` where
``gB``, ``gA`` are the output gradients of the ``lora_B`` / ``lora_A`` submodules (the
LoRA scaling is already inside ``gB``). Hooks capture the inputs and output gradients in
one batched forward+backward of ``sum_i L_i``, and an einsum per module gives every
sample's gradient. With the standard init (B = 0) every ``dL_i/dA`` is exactly zero
(it is ``B^T`` times something), so only the B gradients are formed.

LESS (arXiv 2402.04333) preconditions a training sample's gradient with the Adam moments of
a warm-up checkpoint (:func:`adam_precondition`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Sequence

from pydantic import Field

from syllabus.scoring.base import ScorerConfig

if TYPE_CHECKING:
    from syllabus.scoring.projection import KroneckerProjector


DIQ_TARGET_MODULES = ("q_proj", "k_proj", "v_proj")


class LoraSettings(ScorerConfig):
    """Which adapters the gradient is taken with respect to (DIQ: rank 8 on q, k, v; the LESS
    authors' code: rank 128, alpha 512 on q, k, v, o, dropout 0.1)."""

    key_defaults: ClassVar[dict[str, Any]] = {"dropout": 0.0}

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = DIQ_TARGET_MODULES
    init: Literal["default", "gaussian"] = "default"  # peft: kaiming-uniform A / gaussian A; B = 0 both
    init_seed: int = 0
    # Dropout on the LoRA path. It acts only while the LESS warm-up trains: gradients are taken
    # in eval mode, as the authors' code takes them (its models come from from_pretrained, in
    # eval mode), so their features are deterministic.
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


# ------------------------------------------------------------------ per-sample LoRA gradients
def lora_param_name(module_name: str, which: str) -> str:
    """Canonical parameter name, independent of peft's wrapper prefixes: ``layers.3.self_attn.q_proj.lora_B``."""
    for prefix in ("base_model.model.", "model."):
        if module_name.startswith(prefix):
            module_name = module_name[len(prefix):]
    return f"{module_name}.{which}"


@dataclass
class LoraModule:
    name: str  # canonical module name
    layer: Any  # peft lora Linear
    a: Any  # nn.Linear r x d_in
    b: Any  # nn.Linear d_out x r


class LoraGradients:
    """The target model wrapped with LoRA adapters, computing per-sample gradients.

    Wraps ``model`` in place (peft) and restores it on :meth:`close` (adapters removed,
    ``requires_grad`` flags restored), so a process-wide cached model stays usable by other
    scorers. Use as a context manager."""

    def __init__(self, model: Any, settings: LoraSettings, state: Mapping[str, Any] | None = None):
        import torch
        from peft import LoraConfig, get_peft_model

        self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self._was_training = model.training
        torch.manual_seed(settings.init_seed)  # A's init is part of the features: seed it
        config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            init_lora_weights=True if settings.init == "default" else "gaussian",
            bias="none",
        )
        self.peft_model = get_peft_model(model, config)
        self.peft_model.eval()
        self.base = self.peft_model.get_base_model()
        self.modules: list[LoraModule] = []
        for name, mod in self.peft_model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                self.modules.append(LoraModule(lora_param_name(name, "").rstrip("."), mod,
                                                mod.lora_A["default"], mod.lora_B["default"]))
        if not self.modules:
            raise ValueError(f"no module of the model matches the LoRA target modules {list(settings.target_modules)}")
        if state is not None:
            self.load_state(state)

    # -- adapter state -----------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for m in self.modules:
            out[f"{m.name}.lora_A"] = tuple(m.a.weight.shape)
            out[f"{m.name}.lora_B"] = tuple(m.b.weight.shape)
        return out

    def state(self) -> dict[str, Any]:
        """Canonical name -> weight (a copy), for checkpoints."""
        out = {}
        for m in self.modules:
            out[f"{m.name}.lora_A"] = m.a.weight.detach().cpu().clone()
            out[f"{m.name}.lora_B"] = m.b.weight.detach().cpu().clone()
        return out

    def load_state(self, state: Mapping[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for m in self.modules:
                m.a.weight.copy_(state[f"{m.name}.lora_A"])
                m.b.weight.copy_(state[f"{m.name}.lora_B"])

    def b_is_zero(self) -> bool:
        return all(not bool(m.b.weight.detach().any()) for m in self.modules)

    def close(self) -> None:
        try:
            self.peft_model.unload()
        finally:
            model = self.base
            for n, p in model.named_parameters():
                if n in self._requires_grad:
                    p.requires_grad_(self._requires_grad[n])
            model.train(self._was_training)

    def __enter__(self) -> "LoraGradients":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- gradients ---------------------------------------------------------------------------
    def per_sample(self, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int,
                   with_a: bool | None = None) -> tuple[dict[str, Any], list[float], list[int]]:
        """Per-sample gradients of ``L_i = mean NLL over response positions`` in one batched
        forward+backward. Returns ``(grads, losses, n_tokens)`` with ``grads[name]`` a float32
        ``[n, numel]`` tensor laid out like the parameter (``A``: ``[r, d_in]``, ``B``:
        ``[d_out, r]``). ``with_a=None`` skips the A gradients when every B is zero (they are
        exactly zero then)."""
        import torch

        n = len(seqs)
        grads: dict[str, Any] = {}

        def on_grad(name: str, which: str, g: Any, x: Any) -> None:
            eq = "btr,bti->bri" if which == "lora_A" else "bto,btr->bor"
            grads[f"{name}.{which}"] = torch.einsum(eq, g.float(), x.float()).reshape(n, -1)

        losses, counts = self._forward_backward(seqs, prompt_lens, pad_id, with_a, on_grad)
        return grads, losses, counts

    def per_sample_projected(self, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int,
                             projector: "KroneckerProjector", with_a: bool | None = None,
                             order: str = "auto") -> tuple[Any, list[float], list[int]]:
        """Like :meth:`per_sample`, but each module's per-sample gradients are Kronecker-projected
        inside its backward hook (:meth:`KroneckerProjector.project_outer`) and summed, so only
        the ``[n, k]`` output and one module's gradients are ever held. Returns
        ``(vectors, losses, n_tokens)`` with ``vectors`` float32 ``[n, k]`` on the model's device;
        equal to ``projector.project(per_sample(...)[0])``."""
        n = len(seqs)
        out = projector.new_output(n)
        view = out.view(n, projector.rank, projector.k1)

        def on_grad(name: str, which: str, g: Any, x: Any) -> None:
            view.add_(projector.project_outer(f"{name}.{which}", g, x, order))

        losses, counts = self._forward_backward(seqs, prompt_lens, pad_id, with_a, on_grad)
        return out.mul_(projector.scale), losses, counts

    def _forward_backward(self, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int,
                          with_a: bool | None, on_grad: Any) -> tuple[list[float], list[int]]:
        """One batched forward+backward of ``sum_i L_i``; for every LoRA module, calls
        ``on_grad(module_name, "lora_B" | "lora_A", output_grad [n, T, out], input [n, T, in])``
        from the backward hooks (the per-sample weight gradient is ``sum_t out_grad input^T``).
        Returns ``(losses, n_tokens)``."""
        import torch

        from syllabus.models.engines import decoder_and_head
        from syllabus.models.losses import token_nll_from_hidden

        if with_a is None:
            with_a = not self.b_is_zero()
        device = next(self.base.parameters()).device
        n = len(seqs)
        width = max(len(s) for s in seqs)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        wanted = torch.zeros((n, width), dtype=torch.bool)
        for i, (s, p) in enumerate(zip(seqs, prompt_lens)):
            ids[i, : len(s)] = torch.tensor(list(s))
            mask[i, : len(s)] = 1
            wanted[i, max(p, 1) : len(s)] = True
        ids, mask, wanted = ids.to(device), mask.to(device), wanted.to(device)
        counts = wanted.sum(1)
        if bool((counts == 0).any()):
            raise ValueError("a sample has no response tokens within the cutoff")

        handles = []

        def capture(m: LoraModule):
            saved: dict[str, Any] = {}

            def on_a(_mod, inputs, output):
                if with_a:
                    saved["x"] = inputs[0]
                    output.register_hook(lambda g: on_grad(m.name, "lora_A", g, saved.pop("x")))

            def on_b(_mod, inputs, output):
                saved["h"] = inputs[0]
                output.register_hook(lambda g: on_grad(m.name, "lora_B", g, saved.pop("h")))

            handles.append(m.a.register_forward_hook(on_a))
            handles.append(m.b.register_forward_hook(on_b))

        for m in self.modules:
            capture(m)
        try:
            body, head = decoder_and_head(self.base)
            with torch.enable_grad():
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                nll = token_nll_from_hidden(hidden, head, ids, wanted)
                per_sample = torch.where(wanted, nll, torch.zeros_like(nll)).sum(1) / counts
                per_sample.sum().backward()
        finally:
            for h in handles:
                h.remove()
            for p in self.peft_model.parameters():
                p.grad = None
        return per_sample.detach().cpu().tolist(), counts.cpu().tolist()


def adam_precondition(grads: Mapping[str, Any], moments: Mapping[str, tuple[Any, Any]],
                      beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                      eps_inside_sqrt: bool = False) -> dict[str, Any]:
    """LESS's Adam direction of a per-sample gradient: ``m / (sqrt(v) + eps)`` with
    ``m = b1 m0 + (1 - b1) g`` and ``v = b2 v0 + (1 - b2) g^2`` from the checkpoint's moments
    ``(m0, v0)`` (Adam's own update direction, no bias correction). ``eps_inside_sqrt`` gives
    the authors' code's ``m / sqrt(v + eps)`` instead (``collect_grad_reps.py``): where ``v``
    is far below ``eps``, as early in a warm-up, that is nearly ``m / sqrt(eps) = m / 1e-4``,
    while Adam's is nearly ``m / sqrt(v)``. Every parameter with moments is returned,
    including ones whose gradient is zero (their direction is not)."""
    import torch

    out = {}
    n = next(iter(grads.values())).shape[0]
    for name, (m0, v0) in moments.items():
        g = grads.get(name)
        m0 = m0.reshape(1, -1).float()
        v0 = v0.reshape(1, -1).float()
        if g is None:
            g = torch.zeros((n, m0.shape[1]), dtype=torch.float32)
        g = g.to(m0.device)
        m = beta1 * m0 + (1 - beta1) * g
        v = beta2 * v0 + (1 - beta2) * g * g
        out[name] = m / (v + eps).sqrt() if eps_inside_sqrt else m / (v.sqrt() + eps)
    return out
