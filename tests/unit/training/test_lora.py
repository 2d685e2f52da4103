"""LoRA fine-tuning on a tiny random Llama: masking, exact accumulation, seeding, store round trip."""

from __future__ import annotations

import io
import math
import tarfile
import uuid
from types import SimpleNamespace

import pytest
import torch

from tiny_models import make_tiny_llama
from syllabus.models.chat import encode_pair
from syllabus.models.adapters import load_adapter, read_adapter_manifest
from syllabus.pool.samples import load_samples
from syllabus.store import Store
from syllabus.training.config import FinetuneConfig
from syllabus.training.data import IGNORE_INDEX, build_examples, collate
from syllabus.training.lora import accumulate_gradients, finetune, make_lora_model, response_loss, train_lora

SAMPLES = [
    {"sample_id": f"s{i}", "instruction": q, "input": "", "output": a, "messages": None}
    for i, (q, a) in enumerate(
        [
            ("What is anemia?", "A lack of healthy red blood cells."),
            ("What causes gout?", "Uric acid crystals in the joints."),
            ("Name a symptom of flu.", "Fever."),
            ("How is asthma treated?", "With inhaled bronchodilators and steroids."),
            ("What does insulin do?", "It lowers blood sugar by helping cells take up glucose."),
            ("What is a fracture?", "A broken bone."),
        ]
    )
]


def test_labels_mask_prompt_positions(smol_tokenizer):
    examples, counts = build_examples(smol_tokenizer, SAMPLES[:2], cutoff=1024)
    for sample, ex in zip(SAMPLES, examples):
        enc = encode_pair(smol_tokenizer, sample)
        assert ex.input_ids == enc.input_ids
        assert ex.labels[: enc.prompt_len] == [IGNORE_INDEX] * enc.prompt_len
        assert ex.labels[enc.prompt_len :] == enc.input_ids[enc.prompt_len :]
        assert smol_tokenizer.decode(ex.input_ids[enc.prompt_len :]) == sample["output"] + "<|im_end|>"
    # a prompt over the cutoff is skipped, not trained on a truncated prompt
    examples, counts = build_examples(smol_tokenizer, SAMPLES[:1], cutoff=10)
    assert examples == [] and counts["too_long"] == 1


def test_prompt_tokens_contribute_nothing_to_loss_or_gradient(smol_tokenizer):
    examples, _ = build_examples(smol_tokenizer, SAMPLES[:2], cutoff=1024)
    batch = collate(examples, smol_tokenizer.pad_token_id)
    b, length = batch["input_ids"].shape
    torch.manual_seed(0)
    logits = torch.randn(b, length, 50, requires_grad=True)
    ids = batch["input_ids"] % 50  # the fake model's vocabulary
    batch = dict(batch, input_ids=ids, labels=torch.where(batch["labels"] == IGNORE_INDEX, IGNORE_INDEX, ids))
    fake = lambda input_ids, attention_mask: SimpleNamespace(logits=logits)  # noqa: E731
    n_targets = sum(e.n_targets for e in examples)
    loss, total = response_loss(fake, batch, n_targets)

    # hand computation: -log softmax at t-1 of token t, over label positions only
    logp = torch.log_softmax(logits.detach(), dim=-1)
    expected = 0.0
    for row, ex in enumerate(examples):
        for t in range(1, len(ex.input_ids)):
            if ex.labels[t] != IGNORE_INDEX:
                expected -= float(logp[row, t - 1, ids[row, t]])
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(expected / n_targets, rel=1e-5)

    loss.backward()
    grad_rows = logits.grad.abs().sum(-1)  # [B, L]
    for row, ex in enumerate(examples):
        prompt_len = ex.labels.index(next(t for t in ex.labels if t != IGNORE_INDEX))
        # logits at positions 0..prompt_len-2 predict prompt tokens: no gradient at all
        assert torch.all(grad_rows[row, : prompt_len - 1] == 0)
        # the last position of each row predicts nothing (end of sequence or padding)
        assert torch.all(grad_rows[row, len(ex.input_ids) - 1 :] == 0)
        assert torch.all(grad_rows[row, prompt_len - 1 : len(ex.input_ids) - 1] > 0)


def test_accumulation_is_exact_and_training_is_seeded(smol_tokenizer):
    examples, _ = build_examples(smol_tokenizer, SAMPLES, cutoff=1024)
    cfg = FinetuneConfig(batch_size=6, micro_batch_size=6, learning_rate=1e-3, warmup_ratio=0.0, lora_dropout=0.0)

    def grads(micro_batch_size):
        model = make_lora_model(make_tiny_llama(len(smol_tokenizer)), cfg)
        # B = 0 at init gives A no gradient; a non-zero B makes every LoRA gradient non-trivial
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        nll = accumulate_gradients(model, examples, micro_batch_size, smol_tokenizer.pad_token_id, "cpu")
        return nll, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    nll_full, g_full = grads(6)
    nll_micro, g_micro = grads(2)
    assert nll_full == pytest.approx(nll_micro, rel=1e-5)
    assert len(g_full) > 0
    for name in g_full:
        assert torch.allclose(g_full[name], g_micro[name], rtol=1e-4, atol=1e-7), name
    assert any(float(g.abs().sum()) > 0 for n, g in g_full.items() if "lora_A" in n)

    def run():
        return train_lora(make_tiny_llama(len(smol_tokenizer)), smol_tokenizer, examples, cfg, progress=False)[1]

    first, again = run(), run()
    assert first["losses"] == again["losses"]
    assert first["steps"] == 1 and first["samples_seen"] == 6


def test_loss_goes_down_with_steps_and_progress_is_reported(smol_tokenizer, caplog):
    examples, _ = build_examples(smol_tokenizer, SAMPLES, cutoff=1024)
    cfg = FinetuneConfig(batch_size=2, micro_batch_size=2, learning_rate=5e-3, epochs=4, lr_scheduler="constant",
                         warmup_ratio=0.0, lora_dropout=0.0, lora_rank=16)
    calls = []
    with caplog.at_level("INFO", logger="syllabus.training.lora"):
        _, stats = train_lora(make_tiny_llama(len(smol_tokenizer)), smol_tokenizer, examples, cfg, progress=False,
                              on_progress=lambda done, total, loss: calls.append((done, total, loss)))
    assert stats["steps"] == 12
    first, last = sum(stats["losses"][:3]) / 3, sum(stats["losses"][-3:]) / 3
    assert last < first
    # the callback after every step, with that step's loss; the log about every tenth of the way
    assert [(d, t) for d, t, _ in calls] == [(2 * k, 24) for k in range(1, 13)]
    assert [loss for _, _, loss in calls] == stats["losses"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finetune: ")]
    assert 5 <= len(lines) <= 10, lines
    assert lines[-1].startswith("finetune: 24/24 samples seen (100%), step 12/12") and "about 0 s left" in lines[-1]


def test_adapter_round_trips_through_memory_store(smol_tokenizer):
    store = Store(f"memory://adapters-{uuid.uuid4().hex[:8]}")
    cfg = FinetuneConfig(batch_size=3, micro_batch_size=3, learning_rate=1e-2, warmup_ratio=0.0, lora_dropout=0.0)
    trained = make_tiny_llama(len(smol_tokenizer), seed=7)
    result = finetune(trained, smol_tokenizer, SAMPLES, cfg, store, "sha256:tiny", base_model="tiny", progress=False)
    assert result.samples == 6 and result.steps == 2 and not result.cached
    assert store.is_committed(result.adapter_key)
    assert result.adapter_url.startswith("memory://")

    ids = torch.tensor([encode_pair(smol_tokenizer, SAMPLES[0]).input_ids])
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        base = make_tiny_llama(len(smol_tokenizer), seed=7)
        base_logits = base(input_ids=ids).logits
        loaded = load_adapter(base, result.adapter_url, merge=True)
        got = loaded(input_ids=ids).logits
    assert not torch.allclose(base_logits, want, atol=1e-4)  # the adapter changes the model
    assert torch.allclose(got, want, atol=1e-4)

    manifest = read_adapter_manifest(result.adapter_url)
    assert manifest["config"]["lora_rank"] == 8 and manifest["sample_ids"] == [s["sample_id"] for s in SAMPLES]
    assert manifest["train_loss"] == result.train_loss and math.isfinite(result.train_loss)
    with tarfile.open(fileobj=io.BytesIO(store.read_committed(result.adapter_key))) as tar:
        assert {"adapter_config.json", "adapter_model.safetensors", "training.json"} <= set(tar.getnames())

    # the same inputs are a cache hit; a corrupted object is refused
    again = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store, "sha256:tiny",
                     progress=False)
    assert again.cached and again.adapter_url == result.adapter_url and again.losses == result.losses
    # a cached result reports what training took when it ran, not the read-back
    assert again.to_json()["compute_seconds"] == round(result.seconds, 2) > again.seconds
    store.write_bytes(result.adapter_key, b"garbage")
    with pytest.raises(Exception, match="corrupt"):
        load_adapter(make_tiny_llama(len(smol_tokenizer), seed=7), result.adapter_url)


def test_load_samples_reads_question_answer_and_selection_files(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"question": f"Q{i}?", "answer": f"A{i}."}) for i in range(3)))
    samples, counts = load_samples(str(qa))
    assert [s["instruction"] for s in samples] == ["Q0?", "Q1?", "Q2?"] and samples[0]["output"] == "A0."
    table = pa.table({
        "sample_id": ["x"], "source": ["p"], "instruction": ["Why?"], "input": [""], "output": ["Because."],
        "messages": [[{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]],
        "metadata": ["{}"], "threeds_quality": [91.0], "rank": [1],
    })
    pq.write_table(table, tmp_path / "sel.parquet")
    samples, counts = load_samples(str(tmp_path / "sel.parquet"))
    assert samples[0]["sample_id"] == "x" and samples[0]["output"] == "Because." and counts["rejected"] == 0


def test_micro_batches_respect_count_and_token_budget():
    from syllabus.training.data import TrainExample
    from syllabus.training.lora import micro_batches

    exs = [TrainExample(str(n), [1] * n, [1] * n) for n in (100, 900, 300, 50, 1000, 200)]
    groups = micro_batches(exs, micro_batch_size=3, max_tokens=1000)
    assert [[len(e.input_ids) for e in g] for g in groups] == [[50, 100, 200], [300], [900], [1000]]
    assert sorted(e.sample_id for g in groups for e in g) == sorted(e.sample_id for e in exs)
    assert [[len(e.input_ids) for e in g] for g in micro_batches(exs, 4, None)] == [[50, 100, 200, 300], [900, 1000]]


class Stop(Exception):
    pass


def test_a_stopped_fine_tune_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(smol_tokenizer, tmp_path, caplog):
    from syllabus.training.lora import resume_key

    # dropout on: the resumed run must also continue torch's random state
    cfg = FinetuneConfig(batch_size=2, micro_batch_size=2, learning_rate=5e-3, epochs=2, warmup_ratio=0.2,
                         lora_dropout=0.1)

    def weights(result, seed=7):
        model = load_adapter(make_tiny_llama(len(smol_tokenizer), seed=seed), result.adapter_url)
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    whole = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg,
                     Store(str(tmp_path / "whole")), "sha256:tiny", progress=False)
    assert whole.steps == 6

    store = Store(str(tmp_path / "stopped"))
    seen = []

    def stop_after_four(done, total, loss):
        seen.append(loss)
        if len(seen) == 4:
            raise Stop  # a killed worker, the end of a session

    with pytest.raises(Stop):
        finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store, "sha256:tiny",
                 progress=False, on_progress=stop_after_four, save_every=0.0)
    state = resume_key(whole.adapter_key)
    assert store.exists(state) and not store.is_committed(whole.adapter_key)

    rest = []
    with caplog.at_level("INFO", logger="syllabus.training.lora"):
        resumed = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store,
                           "sha256:tiny", progress=False, on_progress=lambda d, t, loss: rest.append((d, t)),
                           save_every=0.0)
    assert "fine-tune: resuming at step 4 of 6" in caplog.text
    assert rest == [(10, 12), (12, 12)]  # only the two steps left were trained
    assert resumed.adapter_key == whole.adapter_key and resumed.losses == whole.losses
    assert read_adapter_manifest(resumed.adapter_url)["resumed_at_step"] == 4
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert not store.exists(state)  # removed once the adapter is committed

    # a state that cannot be read (a crash while writing) is ignored: training starts over
    store2 = Store(str(tmp_path / "garbled"))
    store2.write_bytes(state, b"not a torch file")
    again = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store2, "sha256:tiny",
                     progress=False)
    assert again.losses == whole.losses and not store2.exists(state)


def test_a_pruned_adapter_keeps_its_record_and_its_evaluations_but_names_the_fix_when_its_weights_are_needed(
        smol_tokenizer, tmp_path):
    """A store carried without adapter weights (the proof's store in git keeps only their
    markers): the fine-tune is not redone, its evaluation is still found by the marker's
    checksum, and whatever needs the weights says how to get them back."""
    from syllabus.evaluation.runner import adapter_checksum
    from syllabus.models.adapters import AdapterPrunedError

    cfg = FinetuneConfig(batch_size=2, micro_batch_size=2, learning_rate=5e-3, epochs=1, warmup_ratio=0.0)
    store = Store(str(tmp_path / "store"))
    first = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store, "sha256:tiny",
                     progress=False)
    checksum = adapter_checksum(first.adapter_url)
    store.fs.rm(store.path(first.adapter_key))  # pruned: the marker stays

    trained = []
    again = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store, "sha256:tiny",
                     progress=False, on_progress=lambda d, t, loss: trained.append(d))
    assert not trained and again.cached and again.pruned and again.to_json()["pruned"] is True
    assert (again.losses, again.steps, again.train_loss, again.samples) == (first.losses, first.steps, first.train_loss, first.samples)
    assert adapter_checksum(again.adapter_url) == checksum  # what evaluation results are keyed by
    with pytest.raises(AdapterPrunedError, match="pruned.*finetune --force"):
        load_adapter(make_tiny_llama(len(smol_tokenizer), seed=7), again.adapter_url)
    with pytest.raises(AdapterPrunedError):
        read_adapter_manifest(again.adapter_url)

    retrained = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store,
                         "sha256:tiny", progress=False, force=True)
    assert not retrained.pruned and store.is_committed(retrained.adapter_key)
    assert retrained.losses == first.losses  # seeded: the same training again, weights back in the store
    load_adapter(make_tiny_llama(len(smol_tokenizer), seed=7), retrained.adapter_url)

    # an adapter committed before markers carried the training record is retrained, not guessed
    marker = store.marker(first.adapter_key)
    store.write_json(store.marker_key(first.adapter_key), {k: v for k, v in marker.items() if k != "training"})
    store.fs.rm(store.path(first.adapter_key))
    old = finetune(make_tiny_llama(len(smol_tokenizer), seed=7), smol_tokenizer, SAMPLES, cfg, store, "sha256:tiny",
                   progress=False)
    assert not old.cached and store.is_committed(old.adapter_key)
