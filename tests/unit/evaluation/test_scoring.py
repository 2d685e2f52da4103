"""Cloze, letter and reference-NLL scoring on a tiny random Llama, checked against direct forwards."""

from __future__ import annotations

import math
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from syllabus.evaluation import multiple_choice as mc
from syllabus.evaluation.benchmarks import Benchmark, MCItem, QAItem
from syllabus.evaluation.openqa import reference_nll, summarise_nll
from syllabus.evaluation.runner import EvalConfig, run_evaluation
from syllabus.models.chat import encode_pair, encode_prompt
from syllabus.models.engines import TransformersEngine
from syllabus.store import Store

ITEMS = [
    MCItem("m1", "anatomy", "Which nerve supplies the diaphragm?", ("phrenic nerve", "vagus", "ulnar nerve", "the radial"), 0),
    MCItem("m2", "pharmacology", "Which drug is an anticoagulant?", ("warfarin", "insulin", "metformin", "salbutamol inhaler"), 0),
]
QA = [QAItem("q1", "qa", "What is anemia?", "A lack of healthy red blood cells."), QAItem("q2", "qa", "Define fever.", "High body temperature.")]


@pytest.fixture
def engine(smol_tokenizer, tiny_llama):
    return TransformersEngine(tiny_llama, smol_tokenizer, batch_size=4, progress=False)


def _direct_logprobs(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


def test_cloze_shared_prefix_equals_full_sequence_loglik(engine, smol_tokenizer, tiny_llama):
    rows = mc.score_cloze(engine, ITEMS)
    for item, row in zip(ITEMS, rows):
        for j, option in enumerate(item.options):
            enc = encode_pair(smol_tokenizer, {"instruction": item.question}, response=option)
            end = len(enc.input_ids) - 1  # <|im_end|> is one token and is not scored
            logp = _direct_logprobs(tiny_llama, enc.input_ids)
            want = sum(float(logp[t - 1, enc.input_ids[t]]) for t in range(enc.prompt_len, end))
            assert row["option_loglik"][j] == pytest.approx(want, abs=2e-4)
            assert row["option_tokens"][j] == end - enc.prompt_len


def test_cloze_normalisations_pick_by_hand(monkeypatch, engine):
    # option texts of 2, 10 and 20 characters; log-likelihoods chosen so each normalisation differs
    item = MCItem("x", "s", "Q?", ("ab", "abcdefghij", "abcdefghijklmnopqrst"), 2)
    monkeypatch.setattr(mc, "option_logliks", lambda model, p, opts, pad: [-1.0, -4.0, -6.0])
    row = mc.score_cloze(engine, [item], mc.MCConfig(normalisation="char"))[0]
    # none: -1 > -4 > -6 -> 0;  char: -0.5, -0.4, -0.3 -> 2;  token: depends on token counts
    assert row["correct_none"] is False and row["pred"] == 2 and row["correct"] and row["correct_char"]
    toks = row["option_tokens"]
    by_token = int(np.argmax([-1.0 / toks[0], -4.0 / toks[1], -6.0 / toks[2]]))
    assert row["correct_token"] == (by_token == 2)
    assert mc.score_cloze(engine, [item], mc.MCConfig(normalisation="none"))[0]["pred"] == 0


def test_letter_scores_next_token_distribution(engine, smol_tokenizer, tiny_llama):
    rows = mc.score_letter(engine, ITEMS)
    letters = mc.letter_token_ids(smol_tokenizer, 4)
    assert all(len(ids) >= 1 for ids in letters)
    for item, row in zip(ITEMS, rows):
        enc = encode_prompt(smol_tokenizer, {"instruction": mc.letter_question(item)})
        logp = _direct_logprobs(tiny_llama, enc.input_ids)[-1]
        want = [float(torch.logsumexp(logp[ids], dim=0)) for ids in letters]
        assert row["option_loglik"] == pytest.approx(want, abs=2e-4)
        assert row["pred"] == int(np.argmax(want))
        top = smol_tokenizer.decode([int(torch.argmax(logp))]).strip()
        assert row["exact_match"] == (top == "ABCD"[item.answer])


def test_reference_nll_is_mean_over_response_tokens(engine, smol_tokenizer, tiny_llama):
    rows = reference_nll(engine, QA)
    for item, row in zip(QA, rows):
        enc = encode_pair(smol_tokenizer, {"instruction": item.question}, response=item.reference)
        logp = _direct_logprobs(tiny_llama, enc.input_ids)
        nll = [-float(logp[t - 1, enc.input_ids[t]]) for t in range(enc.prompt_len, len(enc.input_ids))]
        assert row["ref_nll"] == pytest.approx(sum(nll) / len(nll), abs=2e-4)
        assert row["ref_tokens"] == len(nll)
    summary = summarise_nll(rows)
    assert summary["ref_nll"] == pytest.approx((rows[0]["ref_nll"] + rows[1]["ref_nll"]) / 2)
    tokens = rows[0]["ref_tokens"] + rows[1]["ref_tokens"]
    assert summary["ref_nll_token"] == pytest.approx((rows[0]["ref_nll_sum"] + rows[1]["ref_nll_sum"]) / tokens)
    assert summary["ref_ppl"] == pytest.approx(math.exp(summary["ref_nll_token"]))


def test_run_evaluation_commits_results_and_reuses_them(smol_tokenizer, tiny_llama):
    store = Store(f"memory://eval-{uuid.uuid4().hex[:8]}")
    lm = SimpleNamespace(model=tiny_llama, tokenizer=smol_tokenizer, fingerprint="sha256:tiny", ref=None)
    benches = [Benchmark("toy-mc", "mc", ITEMS), Benchmark("toy-qa", "qa", QA)]
    config = EvalConfig(mc_methods=("cloze", "letter"), max_new_tokens=4, bootstrap=50)
    result = run_evaluation(lm, benches, store, config=config, progress=False)
    m = result.metrics
    for key in ("toy-mc/cloze/accuracy", "toy-mc/letter/accuracy", "toy-mc/letter/exact_match",
                "toy-mc/cloze/anatomy/accuracy", "toy-qa/open_qa/ref_nll", "toy-qa/open_qa/bleu4", "toy-qa/open_qa/rougeL"):
        assert key in m, key
    assert 0.0 <= m["toy-mc/cloze/accuracy"] <= 1.0 and m["toy-mc/cloze/n"] == 2
    store_, key = Store.open_url(result.results_url)
    table = store_.read_table(key)
    assert table.num_rows == 2 + 2 + 2 == result.rows
    assert set(table.column("method").to_pylist()) == {"cloze", "letter", "open_qa"}
    qa_rows = [r for r in table.to_pylist() if r["method"] == "open_qa"]
    assert all(isinstance(r["prediction"], str) and r["ref_nll"] > 0 for r in qa_rows)
    again = run_evaluation(lm, benches, store, config=config, progress=False)
    assert again.cached and again.results_url == result.results_url and again.metrics == m


def test_judge_results_on_committed_evaluation(smol_tokenizer, tiny_llama):
    from syllabus.evaluation.judges import LocalJudge
    from syllabus.evaluation.runner import judge_results

    store = Store(f"memory://judge-{uuid.uuid4().hex[:8]}")
    lm = SimpleNamespace(model=tiny_llama, tokenizer=smol_tokenizer, fingerprint="sha256:tiny", ref=None)
    result = run_evaluation(lm, [Benchmark("toy-qa", "qa", QA)], store, config=EvalConfig(max_new_tokens=3, bootstrap=20),
                            progress=False)
    judge = LocalJudge(tiny_llama, smol_tokenizer)
    m = judge_results(store, result.results_url, judge, "local:tiny", rubric=True, compare_url=result.results_url,
                      progress=False)
    assert 1.0 <= m["toy-qa/judge/rubric_mean"] <= 5.0
    assert m["toy-qa/judge/judged"] == 2 and 0.0 <= m["toy-qa/judge/win_rate"] <= 1.0
    s, k = Store.open_url(m["judge/results"])
    table = s.read_table(k).to_pylist()
    assert len(table) == 2 and all(1.0 <= r["rubric_safety_check"] <= 5.0 for r in table)
    # identical answers on both sides: the outcome follows the judge's position preference only
    for r in table:
        assert r["pairwise_outcome"] == (1.0 if r["pairwise_p_model1"] > 0.5 else 0.0 if r["pairwise_p_model1"] < 0.5 else 0.5)
    with pytest.raises(ValueError, match="no generated open-QA answers"):
        mc_only = run_evaluation(lm, [Benchmark("toy-mc", "mc", ITEMS)], store, config=EvalConfig(bootstrap=20), progress=False)
        judge_results(store, mc_only.results_url, judge, "local:tiny", progress=False)
