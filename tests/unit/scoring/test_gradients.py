"""Gradient features on the tiny model: batched per-sample LoRA gradients equal one backward
per sample; the projection is deterministic across processes and preserves dot products
within the Johnson-Lindenstrauss bound; golden store key; the model is restored."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch
from scoring_helpers import GRADIENT_SAMPLES as SAMPLES
from scoring_helpers import loaded_tiny_model, one_backward_per_sample

from syllabus.models.chat import encode_pair
from syllabus.scoring.gradients import GradientsConfig, GradientsScorer, gradient_features, vectors_column, vectors_of
from syllabus.scoring.lora_gradients import LoraGradients, LoraSettings, adam_precondition
from syllabus.scoring.projection import KroneckerProjector, ProjectionSettings, Projector, kronecker_factor, projection_block
from syllabus.store import Store

@pytest.mark.parametrize("random_b", [False, True])
def test_batched_per_sample_gradients_equal_one_backward_each(tiny_llama, smol_tokenizer, random_b):
    tok = smol_tokenizer
    encs = [encode_pair(tok, s) for s in SAMPLES]  # mixed lengths: right padding inside the batch
    with LoraGradients(tiny_llama, LoraSettings(rank=4)) as lora:
        if random_b:  # a warmed-up adapter: B != 0, so the A gradients are non-zero too
            torch.manual_seed(1)
            with torch.no_grad():
                for m in lora.modules:
                    m.b.weight.normal_(0, 0.5)
        grads, losses, counts = lora.per_sample([e.input_ids for e in encs], [e.prompt_len for e in encs],
                                                tok.pad_token_id)
        assert (f"{lora.modules[0].name}.lora_A" in grads) == random_b
        for i, e in enumerate(encs):
            want = one_backward_per_sample(lora, e.input_ids, e.prompt_len)
            assert counts[i] == len(e.input_ids) - e.prompt_len
            for name, w in want.items():
                got = grads[name][i] if name in grads else torch.zeros_like(w)
                assert w.abs().max() > 0 or not (random_b or name.endswith("lora_B"))
                assert torch.allclose(got, w, rtol=1e-3, atol=1e-5 * float(w.abs().max())), name


def test_model_restored_after_wrapping(tiny_llama, smol_tokenizer):
    ids = torch.tensor([encode_pair(smol_tokenizer, SAMPLES[0]).input_ids])
    keys = sorted(tiny_llama.state_dict())
    flags = {n: p.requires_grad for n, p in tiny_llama.named_parameters()}
    with torch.no_grad():
        before = tiny_llama(input_ids=ids).logits
    with LoraGradients(tiny_llama, LoraSettings()) as lora:
        with torch.no_grad():
            for m in lora.modules:
                m.b.weight.fill_(0.3)  # would change the output if left behind
    with torch.no_grad():
        after = tiny_llama(input_ids=ids).logits
    assert sorted(tiny_llama.state_dict()) == keys
    assert {n: p.requires_grad for n, p in tiny_llama.named_parameters()} == flags
    assert torch.equal(before, after)


def test_adam_preconditioning_formula():
    g = {"w": torch.tensor([[1.0, -2.0], [0.0, 0.5]])}
    m0, v0 = torch.tensor([0.1, 0.2]), torch.tensor([0.01, 0.04])
    out = adam_precondition(g, {"w": (m0, v0)}, eps=1e-8)["w"]
    m = 0.9 * m0 + 0.1 * g["w"]
    v = 0.999 * v0 + 0.001 * g["w"] ** 2
    assert torch.allclose(out, m / (v.sqrt() + 1e-8))


_CHILD = """
import json, sys, numpy as np, torch
from syllabus.scoring.projection import ProjectionSettings, Projector, projection_block
s = ProjectionSettings(**json.loads(sys.argv[1]))
block = projection_block(s, "layers.0.self_attn.q_proj.lora_B", 1, 40).numpy()
x = torch.from_numpy(np.arange(3 * 300, dtype=np.float32).reshape(3, 300) / 300.0)
y = Projector(s).project({"p": x}).numpy()
print(json.dumps({"block": block.tolist(), "y": y.tolist()}))
"""


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_projection_deterministic_across_processes(kind):
    s = ProjectionSettings(kind=kind, dim=64, seed=7)
    child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(s.model_dump())], capture_output=True,
                           text=True, check=True)
    theirs = json.loads(child.stdout)
    block = projection_block(s, "layers.0.self_attn.q_proj.lora_B", 1, 40).numpy()
    assert np.array_equal(np.asarray(theirs["block"], dtype=np.float32), block)
    x = torch.from_numpy(np.arange(3 * 300, dtype=np.float32).reshape(3, 300) / 300.0)
    y = Projector(s).project({"p": x}).numpy()
    assert np.allclose(np.asarray(theirs["y"], dtype=np.float32), y, rtol=1e-6, atol=1e-6)
    if kind == "rademacher":
        assert set(np.unique(block)) == {-1.0, 1.0}
    # A different seed, parameter or block gives a different matrix.
    assert not np.array_equal(projection_block(s, "layers.0.self_attn.q_proj.lora_B", 0, 40).numpy(), block)
    other = ProjectionSettings(kind=kind, dim=64, seed=8)
    assert not np.array_equal(projection_block(other, "layers.0.self_attn.q_proj.lora_B", 1, 40).numpy(), block)


def test_projection_blocking_and_grouping_do_not_change_the_result():
    rng = np.random.default_rng(0)
    grads = {"a": torch.from_numpy(rng.standard_normal((5, 1000)).astype(np.float32)),
             "b": torch.from_numpy(rng.standard_normal((5, 37)).astype(np.float32))}
    big = Projector(ProjectionSettings(dim=128)).project(grads)
    one_by_one = torch.cat([Projector(ProjectionSettings(dim=128)).project({k: v[i : i + 1] for k, v in grads.items()})
                            for i in range(5)])
    assert torch.allclose(big, one_by_one, rtol=1e-5, atol=1e-4)
    # A parameter whose gradient is zero contributes nothing, so skipping it is exact.
    with_zero = dict(grads, z=torch.zeros(5, 500))
    assert torch.allclose(Projector(ProjectionSettings(dim=128)).project(with_zero), big, rtol=1e-5, atol=1e-4)


def _known_inner_products(d: int, n: int):
    """n unit vectors in R^d: u_0, and u_i with u_0 . u_i = c_i for c evenly spaced in
    [-0.9, 0.9]; returns them (float32) and their true Gram matrix."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal(d)
    base /= np.linalg.norm(base)
    cos = np.linspace(-0.9, 0.9, n - 1)
    vecs = [base]
    for c in cos:
        r = rng.standard_normal(d)
        r -= r.dot(base) * base
        r /= np.linalg.norm(r)
        vecs.append(c * base + math.sqrt(1 - c * c) * r)
    u = torch.from_numpy(np.stack(vecs).astype(np.float32))
    true = (u @ u.T).numpy()
    assert np.allclose(true[0, 1:], cos, atol=1e-5)  # the true values are known by construction
    return u, true


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_projected_dot_products_within_jl_bound(kind):
    """Known inner products: unit vectors u_i in R^D with u_0 . u_i = c_i. For one vector x,
    P(| |Px|^2 - |x|^2 | > eps |x|^2) <= 2 exp(-k (eps^2/2 - eps^3/3) / 2) (Achlioptas 2003, for
    +-1 and Gaussian entries). A union bound over the 2 n^2 vectors u_i +- u_j gives, when
    k >= 2 ln(4 n^2 / delta) / (eps^2/2 - eps^3/3), with probability >= 1 - delta that
    |<Pu_i, Pu_j> - <u_i, u_j>| <= eps for every pair (polarisation: the error is at most
    eps (|u_i + u_j|^2 + |u_i - u_j|^2) / 4 = eps for unit vectors)."""
    d, k, n, delta = 5000, 2048, 12, 0.01
    eps = 0.2
    assert k >= 2 * math.log(4 * n * n / delta) / (eps**2 / 2 - eps**3 / 3)
    u, true = _known_inner_products(d, n)
    half = d // 2  # two parameters: the projection spans both
    pu = Projector(ProjectionSettings(kind=kind, dim=k, seed=11)).project(
        {"p0": u[:, :half], "p1": u[:, half:]}).double().numpy()
    approx = pu @ pu.T
    err = np.abs(approx - true)
    assert err.max() <= eps
    # And typically much better: the standard deviation of one estimate is about sqrt(2/k).
    assert np.median(err) < 3 * math.sqrt(2 / k)


def test_vectors_column_roundtrip_through_parquet():
    v = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    v[1] = np.nan
    t = pa.table({"sample_id": ["a", "b", "c"], "gradients_vector": vectors_column(v),
                  "gradients_status": ["ok", "too_long", "ok"]})
    store = Store("memory://grad-roundtrip")
    store.commit_table("x.parquet", t, {})
    back = vectors_of(store.read_table("x.parquet"))
    assert np.isnan(back[1]).all()
    assert np.allclose(back[[0, 2]], v[[0, 2]].astype(np.float16).astype(np.float32))


def test_scorer_features_and_statuses(tiny_llama, smol_tokenizer):
    cfg = GradientsConfig(lora=LoraSettings(rank=2), projection=ProjectionSettings(dim=64), batch_size=2,
                          projection_group=3)
    rows = SAMPLES + [{"sample_id": "long", "instruction": "word " * 200, "input": "", "output": "x", "messages": None}]
    table = pa.Table.from_pylist(rows)
    scorer = GradientsScorer(cfg.model_copy(update={"cutoff": 64}))
    out = scorer.score(table, loaded_tiny_model(tiny_llama, smol_tokenizer))
    st = out.column("gradients_status").to_pylist()
    assert st == ["ok", "ok", "ok", "ok", "too_long"]
    vec = vectors_of(out)
    assert vec.shape == (5, 64) and np.isfinite(vec[:4]).all() and np.isnan(vec[4]).all()
    # Equals projecting the one-backward-per-sample gradients of the same adapters.
    with LoraGradients(tiny_llama, cfg.lora) as lora:
        for i, s in enumerate(SAMPLES):
            e = encode_pair(smol_tokenizer, s, cutoff=64)
            want = one_backward_per_sample(lora, e.input_ids, e.prompt_len)
            proj = Projector(cfg.projection).project({k: w[None] for k, w in want.items()})[0].numpy()
            assert np.allclose(vec[i], proj, rtol=2e-2, atol=2e-3 * np.abs(proj).max())
            assert math.isclose(out.column("gradients_tokens")[i].as_py(), len(e.input_ids) - e.prompt_len)


def test_golden_store_key():
    """Any change to the key (config fields, defaults, scheme) shows here: bump the version
    when numbers change, and update this string deliberately."""
    assert GradientsScorer().key("sha256:model", "shardhash") == (
        "scores/gradients/v1/rademacher-k4096-seed0/c994026170685cf3deae4342.parquet")
    other = GradientsScorer(projection={"dim": 8192, "seed": 3}).key("sha256:model", "shardhash")
    assert other.startswith("scores/gradients/v1/rademacher-k8192-seed3/")


# ------------------------------------------------------------------ kind "kronecker"
def _kron_plain(s: ProjectionSettings, rank: int, grads: dict[str, torch.Tensor],
                shapes: dict[str, tuple[int, int]]) -> torch.Tensor:
    """The definition, from whole gradients: ``sum_m R1_m G_m R2_m^T / sqrt(k1)`` with the
    Rademacher factor on the large side and ``I_r`` on the rank side; a ``B``-shaped block
    (``k1 x r``) is written transposed so every block is ``r x k1``."""
    k1 = s.dim // rank
    out = torch.zeros(rank, k1)
    eye = torch.eye(rank)
    for name, g in grads.items():
        rows, cols = shapes[name]
        G = g.reshape(rows, cols).float()
        if cols == rank:  # B: R1 = R^T (k1 x d_out), R2 = I
            out += (kronecker_factor(s, name, rows, k1).T @ G @ eye.T).T
        else:  # A: R1 = I, R2 = R^T (k1 x d_in)
            out += eye @ G @ kronecker_factor(s, name, cols, k1)
    return out.reshape(-1) / math.sqrt(k1)


@pytest.mark.parametrize("random_b", [False, True])
def test_kronecker_in_hooks_equals_projecting_one_backward_each(tiny_llama, smol_tokenizer, random_b):
    tok = smol_tokenizer
    rank = 4
    s = ProjectionSettings(kind="kronecker", dim=64, seed=5)
    encs = [encode_pair(tok, x) for x in SAMPLES]
    with LoraGradients(tiny_llama, LoraSettings(rank=rank)) as lora:
        if random_b:  # A gradients are non-zero and projected too
            torch.manual_seed(1)
            with torch.no_grad():
                for m in lora.modules:
                    m.b.weight.normal_(0, 0.5)
        shapes = lora.param_shapes()
        proj = KroneckerProjector(s, rank, shapes)
        args = ([e.input_ids for e in encs], [e.prompt_len for e in encs], tok.pad_token_id, proj)
        got = {order: lora.per_sample_projected(*args, order=order) for order in ("auto", "gradient", "factors")}
        vecs, losses, counts = got["auto"]
        assert vecs.shape == (len(SAMPLES), 64)
        grads, losses_ps, counts_ps = lora.per_sample(*args[:3])
        assert counts == counts_ps and np.allclose(losses, losses_ps, rtol=1e-6)
        for order in ("gradient", "factors"):
            assert torch.allclose(got[order][0], vecs, rtol=1e-4, atol=1e-5 * float(vecs.abs().max()))
        # Projecting the stored batched gradients the plain way gives the same.
        assert torch.allclose(proj.project(grads), vecs, rtol=1e-4, atol=1e-5 * float(vecs.abs().max()))
        for i, e in enumerate(encs):
            want = one_backward_per_sample(lora, e.input_ids, e.prompt_len)
            assert any(n.endswith("lora_A") and float(w.abs().max()) > 0 for n, w in want.items()) == random_b
            ref = _kron_plain(s, rank, want, shapes)
            assert ref.abs().max() > 0
            assert torch.allclose(vecs[i], ref, rtol=1e-3, atol=1e-5 * float(ref.abs().max()))
            assert torch.allclose(proj.project({n: w[None] for n, w in want.items()})[0], ref,
                                  rtol=1e-4, atol=1e-6 * float(ref.abs().max()))


_KRON_CHILD = """
import json, sys, numpy as np, torch
from syllabus.scoring.projection import KroneckerProjector, ProjectionSettings, kronecker_factor
s = ProjectionSettings(**json.loads(sys.argv[1]))
f = kronecker_factor(s, "layers.0.self_attn.q_proj.lora_B", 50, 16).numpy()
x = torch.from_numpy(np.arange(3 * 300, dtype=np.float32).reshape(3, 300) / 300.0)
y = KroneckerProjector(s, 4, {"p.lora_B": (50, 4), "p.lora_A": (4, 25)}).project(
    {"p.lora_B": x[:, :200], "p.lora_A": x[:, 200:]}).numpy()
print(json.dumps({"factor": f.tolist(), "y": y.tolist()}))
"""


def test_kronecker_deterministic_across_processes():
    s = ProjectionSettings(kind="kronecker", dim=64, seed=7)
    child = subprocess.run([sys.executable, "-c", _KRON_CHILD, json.dumps(s.model_dump())], capture_output=True,
                           text=True, check=True)
    theirs = json.loads(child.stdout)
    f = kronecker_factor(s, "layers.0.self_attn.q_proj.lora_B", 50, 16).numpy()
    assert np.array_equal(np.asarray(theirs["factor"], dtype=np.float32), f)
    assert set(np.unique(f)) == {-1.0, 1.0}
    x = torch.from_numpy(np.arange(3 * 300, dtype=np.float32).reshape(3, 300) / 300.0)
    y = KroneckerProjector(s, 4, {"p.lora_B": (50, 4), "p.lora_A": (4, 25)}).project(
        {"p.lora_B": x[:, :200], "p.lora_A": x[:, 200:]}).numpy()
    assert np.allclose(np.asarray(theirs["y"], dtype=np.float32), y, rtol=1e-6, atol=1e-6)
    # A different seed or parameter gives a different factor.
    assert not np.array_equal(kronecker_factor(s, "layers.0.self_attn.k_proj.lora_B", 50, 16).numpy(), f)
    other = ProjectionSettings(kind="kronecker", dim=64, seed=8)
    assert not np.array_equal(kronecker_factor(other, "layers.0.self_attn.q_proj.lora_B", 50, 16).numpy(), f)


def test_kronecker_dot_products_within_jl_bound():
    """As the dense JL test, with the Kronecker map's bound. With A's block transposed, row j
    of the ``[r, k1]`` output is one ``k1 x (sum_m d_m)`` Rademacher matrix (the factors side
    by side) applied to the concatenation of every parameter's rank-j column c_j, scaled by
    1/sqrt(k1). |y|^2 = sum_j |R c_j|^2 / k1, so if every rank column's squared norm is kept
    within eps, so is the whole one. Achlioptas per column and a union bound over the 2 n^2
    vectors u_i +- u_j and their r columns: k1 >= 2 ln(4 n^2 r / delta) / (eps^2/2 - eps^3/3)
    gives every |<Pu_i, Pu_j> - <u_i, u_j>| <= eps with probability >= 1 - delta."""
    rank, n, delta, eps = 4, 12, 0.01, 0.2
    shapes = {"p0.lora_B": (2500, rank), "p1.lora_A": (rank, 1500)}  # D = 16000; large sides exceed k1
    d = sum(a * b for a, b in shapes.values())
    k1 = 1536
    assert k1 >= 2 * math.log(4 * n * n * rank / delta) / (eps**2 / 2 - eps**3 / 3)
    u, true = _known_inner_products(d, n)
    proj = KroneckerProjector(ProjectionSettings(kind="kronecker", dim=k1 * rank, seed=11), rank, shapes)
    pu = proj.project({"p0.lora_B": u[:, :10000], "p1.lora_A": u[:, 10000:]}).double().numpy()
    assert pu.shape == (n, k1 * rank)
    approx = pu @ pu.T
    err = np.abs(approx - true)
    assert err.max() <= eps
    # Spread over the rank columns, one estimate's standard deviation is about sqrt(2 / k).
    assert np.median(err) < 3 * math.sqrt(2 / (k1 * rank))


def test_kronecker_invalid_settings_give_clear_errors():
    with pytest.raises(ValueError, match="multiple of the LoRA rank 8"):
        GradientsConfig(projection={"kind": "kronecker", "dim": 100})
    with pytest.raises(ValueError, match="multiple of the LoRA rank 4"):
        KroneckerProjector(ProjectionSettings(kind="kronecker", dim=30), 4)
    with pytest.raises(ValueError, match="no side of the LoRA rank"):
        KroneckerProjector(ProjectionSettings(kind="kronecker", dim=32), 4, {"w": (6, 5)})
    with pytest.raises(ValueError, match="KroneckerProjector"):
        Projector(ProjectionSettings(kind="kronecker", dim=32))
    assert GradientsConfig(lora={"rank": 4}, projection={"kind": "kronecker", "dim": 36}).projection.dim == 36
    key = GradientsScorer(projection={"kind": "kronecker"}).key("sha256:model", "shardhash")
    assert key.startswith("scores/gradients/v1/kronecker-k4096-seed0/")


def test_kronecker_features_plain_and_preconditioned(tiny_llama, smol_tokenizer):
    """gradient_features with kind kronecker: hook-projected vectors equal projecting the
    one-backward-per-sample gradients; with Adam moments (whole gradients needed) the plain
    projections equal the hook path's and the preconditioned ones the projected direction."""
    rank = 2
    cfg = GradientsConfig(lora=LoraSettings(rank=rank), projection=ProjectionSettings(kind="kronecker", dim=64),
                          batch_size=2, projection_group=3, cutoff=64)
    lm = loaded_tiny_model(tiny_llama, smol_tokenizer)
    res = gradient_features(lm, SAMPLES, cfg, progress=False)
    assert res.status == ["ok"] * 4 and res.vectors.shape == (4, 64) and np.isfinite(res.vectors).all()
    with LoraGradients(tiny_llama, cfg.lora) as lora:
        shapes = lora.param_shapes()
        moments = {n: (torch.full(s, 1e-3), torch.full(s, 1e-4)) for n, s in shapes.items()}
        pre = gradient_features(lm, SAMPLES, cfg, lora=lora, moments=moments, also_plain=True, progress=False)
        proj = KroneckerProjector(cfg.projection, rank, shapes)
        for i, smp in enumerate(SAMPLES):
            e = encode_pair(smol_tokenizer, smp, cutoff=64)
            want = one_backward_per_sample(lora, e.input_ids, e.prompt_len)
            ref = proj.project({k: w[None] for k, w in want.items()})[0].numpy()
            assert np.allclose(res.vectors[i], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
            assert np.allclose(pre.plain[i], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
            direction = adam_precondition({k: w[None] for k, w in want.items()}, moments)
            ref_pre = proj.project(direction)[0].numpy()
            assert np.allclose(pre.vectors[i], ref_pre, rtol=1e-3, atol=1e-4 * np.abs(ref_pre).max())
