"""The relevance scorer with the real, packaged all-MiniLM-L6-v2 (22M parameters, offline)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from syllabus.scoring.pool import LazyModel
from syllabus.scoring.relevance import RelevanceScorer, embedder_dir

QUESTION = "What are the symptoms of type 2 diabetes?"
ROWS = [
    {"sample_id": "own", "instruction": QUESTION, "input": "",
     "output": "Common symptoms include increased thirst, frequent urination, fatigue and blurred vision."},
    {"sample_id": "other", "instruction": QUESTION, "input": "",
     "output": "Glaucoma is treated with eye drops that lower the pressure inside the eye."},
    {"sample_id": "boilerplate", "instruction": QUESTION, "input": "",
     "output": "Thank you for your question. Please consult a professional for advice."},
    {"sample_id": "input", "instruction": "Answer the patient.", "input": QUESTION,
     "output": "Common symptoms include increased thirst, frequent urination, fatigue and blurred vision."},
]


class NoTarget(LazyModel):
    """A target model that must never be loaded: relevance does not use it."""

    def get(self):
        raise AssertionError("the relevance scorer loaded the target model")


def test_an_answer_to_its_own_question_scores_above_others_and_no_target_model_loads():
    target = NoTarget("no-such-model")
    target._fingerprint = "sha256:target"
    out = RelevanceScorer().score(pa.Table.from_pylist(ROWS), target).to_pylist()
    score = {r["sample_id"]: r["relevance_score"] for r in out}
    assert all(r["relevance_status"] == "ok" for r in out)
    assert score["own"] > 0.5 > 0.3 > max(score["other"], score["boilerplate"])
    assert math.isclose(score["input"], score["own"], abs_tol=0.05)  # the input is part of the question
    assert all(-1.0 <= v <= 1.0 for v in score.values())


def test_the_cache_key_follows_the_embedder_not_the_target_model(tmp_path):
    scorer = RelevanceScorer()
    assert scorer.key("sha256:one", "shard") == scorer.key("sha256:two", "shard")
    assert scorer.key("sha256:one", "shard") != scorer.key("sha256:one", "other-shard")
    copy = tmp_path / "embedder"
    copy.mkdir()
    for f in embedder_dir("all-minilm-l6-v2").rglob("*"):
        if f.is_file():
            dest = copy / f.relative_to(embedder_dir("all-minilm-l6-v2"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.read_bytes())
    copied = RelevanceScorer(model=str(copy))
    before = copied.key("t", "shard")
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ', "note": 1}', 1))
    assert copied.key("t", "shard") != before  # the same path with other content is another embedder


def test_a_model_that_is_not_an_embedder_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'all-minilm-l6-v2' nor a sentence-transformers directory"):
        RelevanceScorer(model=str(tmp_path)).key("t", "shard")


def test_special_token_spellings_in_a_sample_stay_text():
    """BERT's "[SEP]" or "[CLS]" written in a sample is encoded as characters (issue 29, item 1):
    only the embedder's own [CLS] and [SEP] frame the sequence."""
    from syllabus.models.ref import default_device
    from syllabus.scoring.relevance import RelevanceConfig, embedder_dir, load_embedder

    embedder = load_embedder(str(embedder_dir(RelevanceConfig().model)), default_device())
    tok = embedder.tokenizer
    ids = tok(["Anaemia [SEP] [CLS] is low haemoglobin."])["input_ids"][0]
    specials = set(tok.all_special_ids)
    assert [i for i in ids if i in specials] == [tok.cls_token_id, tok.sep_token_id]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    from transformers import AutoTokenizer

    as_shipped = AutoTokenizer.from_pretrained(embedder_dir(RelevanceConfig().model))  # without the setting
    text = ["Anaemia is low haemoglobin."]
    assert tok(text)["input_ids"][0] == as_shipped(text)["input_ids"][0]  # plain text keeps its ids (and keys)
