"""The `reference` preset of 3DS Stage 2 against the authors' definitions, recomputed here
independently: eager attention with full ``output_attentions``, one sample at a time, the
loss and attention lists sliced as the authors' step-2 code slices them, and their
exact-text part-of-speech filter (methods.md, "Stage 2, reference parity")."""

from __future__ import annotations

import logging
import math
import sys

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from scoring_helpers import SAMPLES, loaded_tiny_model
from tiny_models import make_tiny_llama

from syllabus.models.chat import end_of_turn_text, render_prompt
from syllabus.scoring import difficulty as difficulty_module
from syllabus.scoring.difficulty import DifficultyConfig, DifficultyScorer

STOP_POS = {"PART", "DET", "PUNCT", "CCONJ", "ADP", "CONJ", "SCONJ", "INTJ"}
FP, SHARD = "sha256:0123456789abcdef0123", "feedfacecafebeef"

# Responses with sentence-initial determiners (no leading space, so the authors' exact-text
# match drops them), mid-sentence ones (" the": kept by that match), and punctuation.
REFERENCE_SAMPLES = SAMPLES + [
    {"sample_id": "d", "instruction": "What does the thyroid do?", "input": "",
     "output": "The thyroid makes hormones. A gland in the neck, it sets the pace of metabolism, and of growth.",
     "messages": None},
]


@pytest.fixture(scope="module")
def eager_model(tiny_llama, smol_tokenizer):
    twin = make_tiny_llama(len(smol_tokenizer), attn_implementation="eager")
    twin.load_state_dict(tiny_llama.state_dict())
    return twin.eval()


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    """A real spaCy pipeline on disk whose attribute ruler tags determiners, conjunctions,
    prepositions and punctuation: the statistical models are not installable here, and the
    filter only needs ``token.text`` and ``token.pos_``."""
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add([[{"IS_PUNCT": True}]], {"POS": "PUNCT"})
    ruler.add([[{"LOWER": {"IN": ["the", "a", "an"]}}]], {"POS": "DET"})
    ruler.add([[{"LOWER": {"IN": ["of", "in", "to", "for"]}}]], {"POS": "ADP"})
    ruler.add([[{"LOWER": {"IN": ["and", "or"]}}]], {"POS": "CCONJ"})
    path = tmp_path_factory.mktemp("spacy-tagger") / "tagger"
    nlp.to_disk(path)
    return str(path)


# ----------------------------------------------------------------- the authors' definitions
def _nll_and_attention(model, ids: list[int]):
    """Per-token losses (``losses[t]`` = NLL of token ``t + 1``) and the last layer's attention."""
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model(x, output_attentions=True)
    losses = F.cross_entropy(out.logits[0, :-1].double(), x[0, 1:], reduction="none").tolist()
    return losses, out.attentions[-1][0].double()  # [H, L, L]


def authors_d1(model, tok, sample) -> float:
    """``exp(mean NLL)`` over the whole templated prompt: positions 1..L-1 of ``P``."""
    ids = tok(render_prompt(tok, sample), add_special_tokens=False)["input_ids"]
    losses, _ = _nll_and_attention(model, ids)
    return math.exp(sum(losses) / len(losses))


def authors_weighted_loss(model, tok, sample, response: str, stop_words, kind: str = "mean",
                          cutoff: int = 1024) -> float:
    prompt = render_prompt(tok, sample)
    target = response + end_of_turn_text(tok)
    ids = tok(prompt + target, add_special_tokens=False)["input_ids"][:cutoff]
    start = len(tok(prompt, add_special_tokens=False)["input_ids"])
    losses, att = _nll_and_attention(model, ids)
    length = len(ids)
    if kind == "mean":
        importance = [float(att[:, :, j].sum(dim=1).mean()) / (length - j) for j in range(length)]
    else:
        importance = [float(att[:, :, j].max(dim=1).values.mean()) for j in range(length)]
    token_texts = [tok.convert_tokens_to_string([t]) for t in tok.convert_ids_to_tokens(ids)]
    stop = stop_words(target)
    kept = [(losses[j - 1], importance[j]) for j in range(start, length) if token_texts[j] not in stop]
    total = sum(a for _, a in kept)
    return sum(loss * a / total for loss, a in kept)


def _spacy_stop_words(path):
    import spacy

    nlp = spacy.load(path)
    return lambda text: {t.text for t in nlp(text) if t.pos_ in STOP_POS}


def _tokenizer_stop_words(lang: str = "en"):
    """Without a tagger: the words of spaCy's rule-based tokenizer that its lexical attributes
    call punctuation or a quote, whitespace (SPACE) and "%" (a noun to the tagger) aside."""
    import spacy

    nlp = spacy.blank(lang)
    return lambda text: {t.text for t in nlp(text)
                         if (t.is_punct or t.is_quote) and not t.is_space and t.text != "%"}


def _score(tiny_llama, tok, samples, **config):
    scorer = DifficultyScorer(DifficultyConfig(max_new_tokens=6, batch_size=3, **config))
    rows = scorer.score(pa.Table.from_pylist(samples), loaded_tiny_model(tiny_llama, tok)).to_pylist()
    assert all(r["difficulty_status"] == "ok" for r in rows), [r["difficulty_status"] for r in rows]
    return scorer, rows


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=2e-5, abs_tol=1e-6)


# -------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("kind", ["mean", "max"])
def test_reference_preset_matches_the_authors_definitions(tiny_llama, eager_model, smol_tokenizer, tagger_dir,
                                                          kind):
    tok = smol_tokenizer
    _, rows = _score(tiny_llama, tok, REFERENCE_SAMPLES, preset="reference", spacy_model=tagger_dir,
                     importance=kind)
    stop_words = _spacy_stop_words(tagger_dir)
    for sample, row in zip(REFERENCE_SAMPLES, rows):
        assert _close(row["difficulty_d1"], authors_d1(eager_model, tok, sample))
        assert _close(row["difficulty_d3"], authors_weighted_loss(eager_model, tok, sample, sample["output"],
                                                                  stop_words, kind))
        assert _close(row["difficulty_d2"], authors_weighted_loss(eager_model, tok, sample,
                                                                  row["difficulty_response"], stop_words, kind))


def test_the_filter_drops_exact_text_matches_and_weighs_the_end_token(smol_tokenizer, tagger_dir):
    from syllabus.models.chat import encode_pair

    tok = smol_tokenizer
    keep = difficulty_module.response_filter(DifficultyConfig(preset="reference", spacy_model=tagger_dir), tok)
    enc = encode_pair(tok, REFERENCE_SAMPLES[3])
    texts = {j: tok.convert_tokens_to_string(tok.convert_ids_to_tokens([enc.input_ids[j]])) for j in
             enc.response_positions}
    kept = {texts[j] for j in keep(enc)}
    dropped = {texts[j] for j in enc.response_positions if j not in keep(enc)}
    assert {"The", ".", ","} <= dropped  # sentence-initial determiner and punctuation
    assert " the" in kept and " of" in kept  # the authors' match is on the exact text, space included
    assert end_of_turn_text(tok) in kept and enc.response_positions[-1] in keep(enc)


# A generation with the markup and whitespace SmolLM2 writes: headings, bold, bullets, code
# fences, blank lines, a percentage, marks merged into one token ("%).", ").").
MARKDOWN = ("## Causes\n\n**Iron deficiency** is common (about 30%).\n\n- Blood loss, e.g. ulcers.\n- Poor diet\n\n"
            "```\nHb < 12\n```\n# Note: see a doctor (soon).")
MARKDOWN_SAMPLES = [
    {"sample_id": "m", "instruction": "Why does anemia happen?", "input": "", "output": MARKDOWN, "messages": None},
    {"sample_id": "n", "instruction": "Steps?", "input": "", "messages": None,
     "output": "1. Rest\n2. Fluids -- plenty of them...\n\n*Note*: `rest` matters \"most\"; 1,000 mg/day."},
]


def test_fallback_without_the_spacy_pipeline_follows_spacy_tokens(
        tiny_llama, eager_model, smol_tokenizer, caplog, monkeypatch):
    """The authors' exact-text match against spaCy's own tokens, the tagger replaced by the
    lexical rule, recomputed on generations with newlines and markdown."""
    tok = smol_tokenizer
    monkeypatch.setattr(difficulty_module, "_TAGGERS", {})
    samples = REFERENCE_SAMPLES + MARKDOWN_SAMPLES
    with caplog.at_level(logging.WARNING, logger="syllabus.scoring.difficulty"):
        scorer, rows = _score(tiny_llama, tok, samples, preset="reference", spacy_model="en_no_such_pipeline")
        _score(tiny_llama, tok, samples[:1], preset="reference", spacy_model="en_no_such_pipeline")
    warnings = [r for r in caplog.records if "en_no_such_pipeline" in r.getMessage()]
    assert len(warnings) == 1 and "stand alone as spaCy tokens" in warnings[0].getMessage()
    assert scorer.last_stats["pos_tagger"].startswith("spacy ") and " en tokenizer" in scorer.last_stats["pos_tagger"]
    stop = _tokenizer_stop_words("en")
    for sample, row in zip(samples, rows):
        for response, column in ((sample["output"], "difficulty_d3"), (row["difficulty_response"], "difficulty_d2")):
            want = authors_weighted_loss(eager_model, tok, sample, response, stop)
            assert _close(row[column], want)


@pytest.mark.parametrize("spacy_installed", [True, False])
def test_fallback_rule_on_whitespace_and_markup_tokens(smol_tokenizer, monkeypatch, spacy_installed):
    """Whitespace is SPACE to spaCy (kept); runs of marks ("**", "##", "```", ").") are split
    by spaCy's tokenizer, so no spaCy word equals them (kept); marks standing alone (a bullet
    "-", a heading "#", sentence ends) are dropped; "%" is a noun to the tagger (kept)."""
    from syllabus.models.chat import encode_pair

    tok = smol_tokenizer
    monkeypatch.setattr(difficulty_module, "_TAGGERS", {})
    if not spacy_installed:
        monkeypatch.setitem(sys.modules, "spacy", None)
    keep = difficulty_module.response_filter(DifficultyConfig(preset="reference", spacy_model="en_no_such_pipeline"),
                                             tok)
    enc = encode_pair(tok, MARKDOWN_SAMPLES[0])
    texts = {j: tok.convert_tokens_to_string(tok.convert_ids_to_tokens([enc.input_ids[j]])) for j in
             enc.response_positions}
    kept = {texts[j] for j in keep(enc)}
    dropped = {texts[j] for j in enc.response_positions if j not in keep(enc)}
    assert {"\n", "**", "##", "```", "%).", ").", " (", end_of_turn_text(tok)} <= kept
    assert dropped == {"-", "#", ",", ".", ":"}
    assert (keep.description == "punctuation rule on token texts (spaCy not installed)") is not spacy_installed


def test_fallback_rules_agree_with_spacy_tokens(smol_tokenizer):
    """The rule without spaCy (each token text alone) against the rule on spaCy's tokens,
    position by position, on the generations above: they part only where spaCy keeps a mark
    inside a word ("1,000") and no lone one elsewhere, so the authors keep the model's "," too."""
    from syllabus.models.chat import encode_pair

    tok = smol_tokenizer
    stop = _tokenizer_stop_words("en")
    eot = end_of_turn_text(tok)
    same = total = 0
    for sample in MARKDOWN_SAMPLES:
        enc = encode_pair(tok, sample)
        words = stop(sample["output"] + eot)
        for j in enc.response_positions:
            text = tok.convert_tokens_to_string(tok.convert_ids_to_tokens([enc.input_ids[j]]))
            same += difficulty_module.is_punctuation_text(text) == (text in words)
            total += 1
    assert total > 60 and same / total > 0.97


def test_fallback_when_spacy_is_not_installed(smol_tokenizer, caplog, monkeypatch):
    monkeypatch.setattr(difficulty_module, "_TAGGERS", {})
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy raises ImportError
    with caplog.at_level(logging.WARNING, logger="syllabus.scoring.difficulty"):
        tagger = difficulty_module.load_tagger("en_core_web_sm")
    assert tagger.nlp is None and tagger.description == "punctuation rule on token texts (spaCy not installed)"
    assert any("not installed" in r.getMessage() and "syllabus[reference]" in r.getMessage() for r in caplog.records)


def test_preset_fields_keys_and_defaults(tagger_dir, monkeypatch):
    ref = DifficultyConfig(preset="reference")
    assert (ref.token_filter, ref.d1_span, ref.response_value, ref.importance) == ("pos", "prompt", "mean_nll", "mean")
    assert DifficultyConfig(preset="reference", token_filter="content").token_filter == "content"  # explicit wins
    default = DifficultyScorer().key(FP, SHARD)
    assert DifficultyScorer(preset="ours").key(FP, SHARD) == default
    assert DifficultyScorer(d1_span="prompt").key(FP, SHARD) != default
    monkeypatch.setattr(difficulty_module, "_TAGGERS", {})
    with_tagger = DifficultyScorer(preset="reference", spacy_model=tagger_dir)
    parts = with_tagger.key_parts(FP, SHARD)
    assert parts["pos_tagger"].startswith("spacy ") and "preset" not in parts["config"]
    # the same fields spelt out give the same key as the preset
    spelt = DifficultyScorer(token_filter="pos", d1_span="prompt", response_value="mean_nll", spacy_model=tagger_dir)
    assert spelt.key(FP, SHARD) == with_tagger.key(FP, SHARD) != default
    # a run that falls back to the lexical rule has different numbers, hence a different key;
    # so has one without spaCy at all
    fallback = DifficultyScorer(preset="reference", spacy_model="no_such_spacy_pipeline")
    assert fallback.key(FP, SHARD) != with_tagger.key(FP, SHARD)
    assert "tokenizer, punctuation rule" in fallback.key_parts(FP, SHARD)["pos_tagger"]
    monkeypatch.setitem(sys.modules, "spacy", None)
    no_spacy = DifficultyScorer(preset="reference", spacy_model="other_missing_pipeline")
    assert no_spacy.key(FP, SHARD) not in {fallback.key(FP, SHARD), with_tagger.key(FP, SHARD)}


def test_reference_and_ours_differ_where_methods_md_says(tiny_llama, smol_tokenizer, tagger_dir):
    tok = smol_tokenizer
    _, ours = _score(tiny_llama, tok, REFERENCE_SAMPLES)
    _, ref = _score(tiny_llama, tok, REFERENCE_SAMPLES, preset="reference", spacy_model=tagger_dir)
    _, no_exp = _score(tiny_llama, tok, REFERENCE_SAMPLES, token_filter="content", response_value="mean_nll")
    for o, r, n in zip(ours, ref, no_exp):
        assert o["difficulty_response"] == r["difficulty_response"]
        assert o["difficulty_d1"] != r["difficulty_d1"]  # template tokens enter the authors' D1
        assert math.isclose(math.exp(n["difficulty_d3"]), o["difficulty_d3"], rel_tol=1e-9)  # only the exp differs


def test_pipeline_and_compare_configs_select_the_reference_preset():
    from syllabus.pipeline import compare as C
    from syllabus.pipeline.config import CompareParams, PipelineParams
    from syllabus.plan import make_plan

    params = PipelineParams(methods=["3ds-reference", "random"])
    scorers = make_plan(params.methods, params.scorer_configs).scorers
    assert scorers["difficulty"] == {"preset": "reference"}
    assert DifficultyConfig(**scorers["difficulty"]).token_filter == "pos"
    # or the 3ds method with the preset as a scorer override
    scorers = make_plan(["3ds"], {"difficulty": {"preset": "reference"}}).scorers
    assert DifficultyConfig(**scorers["difficulty"]).d1_span == "prompt"
    # compare: the difficulty windows slide the reference method's band
    compare = CompareParams(methods=["3ds-reference", "random"], window_method="3ds-reference")
    arms = C.compare_arms(compare.methods, compare.seeds, compare.seed, compare.selector_overrides, compare.windows,
                          compare.window_method)
    assert {a["method"] for a in arms if a["group"] == "window"} == {"3ds-reference"}
    scorers = make_plan(sorted({a["method"] for a in arms}), compare.scorer_configs).scorers
    assert scorers["difficulty"]["preset"] == "reference"
