"""3DS Stage 2: decomposed difficulty (Ding et al., EMNLP 2025; arXiv 2410.10901).

Definitions (methods.md, "Stage 2"), all judged by the target model ``M`` itself:

- D1, instruction understanding: ``exp(mean NLL over the instruction positions of P)``.
- Token importance from the LAST layer's attention: ``I(j) = mean_h sum_{q>=j} A[h,q,j] / (L-j)``.
- ``WD(r) = exp(sum_j w_j NLL_j)``, ``w_j = I(j) / sum_k I(k)`` over response positions whose
  decoded text (special tokens skipped) is not empty, whitespace or punctuation only.
- D2, response confidence: ``WD(r_hat)``, ``r_hat`` the model's own greedy response.
- D3, response correctness: ``WD(y)`` on the reference response.
- Embedding: mean over the positions of ``P`` of the last-layer hidden state.

Higher = harder for all three. One forward pass over ``T(y)`` gives D1, D3 and the
embedding (causal attention: the prompt positions of ``T(y)`` are those of ``P``); one over
``T(r_hat)`` gives D2. Both run length-bucketed in batches with the sdpa kernel; the last
layer's attention probabilities are recomputed for that layer alone
(:mod:`syllabus.models.attention`).

Presets (``preset``): ``ours`` (default) is the definitions above. ``reference`` reproduces the
authors' code (``PuppyKnightUniversity/3DS`` step 2; methods.md, "Stage 2, reference parity"):
D1 over every position of ``P`` after the first (``d1_span: prompt``); the end-of-turn tokens
``E`` weighted like any response token and only the words spaCy's tagger marks PART, DET,
PUNCT, CCONJ, ADP, CONJ, SCONJ or INTJ in that response dropped (``token_filter: pos``; without
the spaCy model, the punctuation marks that stand alone as spaCy tokens, with a warning once
per run: the rule and its reasons are in ``_PosFilter``); D2 and D3 reported
as the weighted mean NLL without the ``exp`` (``response_value: mean_nll``, rank-neutral).
``importance: max`` is the authors' other variant, ``mean_h max_{q>=j} A[h,q,j]``. Each field
can also be set on its own.

Columns: ``difficulty_d1``, ``difficulty_d2``, ``difficulty_d3``, ``difficulty_embedding``
(list<float32>), ``difficulty_response`` (the generated ``r_hat``), ``difficulty_status``.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import model_validator

from syllabus import registry
from syllabus.models.attention import LastLayerCapture, token_importance
from syllabus.models.chat import DEFAULT_CUTOFF, EncodedPair, encode_pair, encode_prompt, end_of_turn_text
from syllabus.models.engines import TransformersEngine, decoder_and_head
from syllabus.models.losses import span_mean, token_nll_from_hidden, weighted_exp, weighted_mean
from syllabus.scoring.base import Failed, Scorer, ScorerConfig, error_status, per_item_fallback
from syllabus.scoring.timing import StageClock

log = logging.getLogger(__name__)


# What the `reference` preset sets (methods.md, "Stage 2, reference parity"); fields given
# explicitly win over the preset.
REFERENCE_PRESET: dict[str, Any] = {"token_filter": "pos", "d1_span": "prompt", "response_value": "mean_nll"}
# Fields added after the first release: left out of the cache key at their defaults, so
# scores cached with the default config keep their keys.
_KEY_DEFAULTS: dict[str, Any] = {"d1_span": "instruction", "response_value": "exp", "importance": "mean"}


class DifficultyConfig(ScorerConfig):
    # "ours": methods.md's definitions; "reference": the authors' code (REFERENCE_PRESET).
    preset: Literal["ours", "reference"] = "ours"
    cutoff: int = DEFAULT_CUTOFF
    # One default for `syllabus score` and `syllabus run` (issue 33): sized for a CPU run, where
    # SmolLM2-135M generates about 10 tokens a second per batch row; on a GPU set it per run.
    max_new_tokens: int = 48
    batch_size: int = 8
    generate_batch_size: int = 32
    max_batch_tokens: int = 16384
    bucket: bool = True
    # "content": drop positions whose text is empty/whitespace/punctuation (ours, methods.md);
    # "all": weigh every response position; "pos": the authors' part-of-speech filter.
    token_filter: Literal["content", "all", "pos"] = "content"
    # "instruction": D1 over the instruction's positions of P (ours); "prompt": over every
    # position of P after the first, template tokens included (the authors').
    d1_span: Literal["instruction", "prompt"] = "instruction"
    # "exp": WD = exp(weighted mean NLL) (methods.md); "mean_nll": the authors' reported value.
    response_value: Literal["exp", "mean_nll"] = "exp"
    importance: Literal["mean", "max"] = "mean"
    # spaCy pipeline for token_filter "pos": a package name or a pipeline directory (the
    # paper used zh_core_web_sm on Chinese data).
    spacy_model: str = "en_core_web_sm"
    embedding: bool = True

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "reference":
            return {**REFERENCE_PRESET, **data}
        return data


def is_content_text(text: str) -> bool:
    """Not empty, not whitespace only, not punctuation only (language-agnostic stand-in for
    the paper's part-of-speech filter)."""
    stripped = "".join(text.split())
    return bool(stripped) and not all(unicodedata.category(c).startswith("P") for c in stripped)


class _ContentTokens:
    """Memoised ``is_content_text(decode([id], skip_special_tokens=True))`` per token id."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.cache: dict[int, bool] = {}

    def __call__(self, token_id: int) -> bool:
        hit = self.cache.get(token_id)
        if hit is None:
            hit = token_id not in self.special and is_content_text(
                self.tokenizer.decode([token_id], skip_special_tokens=True)
            )
            self.cache[token_id] = hit
        return hit


PAPER_STOP_POS = frozenset({"PART", "DET", "PUNCT", "CCONJ", "ADP", "CONJ", "SCONJ", "INTJ"})
_TAGGERS: dict[str, "Tagger"] = {}


# spaCy's lexical view standing in for its tagger when no statistical pipeline loads (see
# _PosFilter). "%" is punctuation to Unicode and to spaCy's is_punct, but a noun in the
# OntoNotes tags the English pipelines learn (NN) and a symbol in Universal Dependencies.
NOT_PUNCT = frozenset({"%"})
# Punctuation runs spaCy's tokenizer keeps as one token; every other run it splits into marks.
WHOLE_PUNCT_RUNS = frozenset({"..", "...", "....", "--", "---", "----", "''"})


def is_punct_token(token: Any) -> bool:
    """A spaCy token the tagger would mark PUNCT, judged from spaCy's rule-based lexical
    attributes: punctuation or a quote mark (``is_punct``, ``is_quote``), not whitespace
    (``is_space``: spaCy tags whitespace SPACE, which the authors' list does not drop), not in
    NOT_PUNCT."""
    return not token.is_space and (token.is_punct or token.is_quote) and token.text not in NOT_PUNCT


def is_punctuation_text(text: str) -> bool:
    """Without spaCy: a token text that spaCy's tokenizer would most likely produce on its own
    and call punctuation. One punctuation character (Unicode P*, or a backtick, a quote to
    spaCy) other than "%", or a run spaCy keeps whole ("...", "--"); never whitespace, and
    never a run spaCy splits ("**", "##", ")."), which the authors' exact-text match then
    cannot drop."""
    marks = all(unicodedata.category(c).startswith("P") or c in "`\u00b4" for c in text)
    if not text or text in NOT_PUNCT or not marks:
        return False
    return len(text) == 1 or text in WHOLE_PUNCT_RUNS


@dataclass(frozen=True)
class Tagger:
    """What the part-of-speech filter runs: ``nlp`` a spaCy pipeline, ``tags`` whether it
    assigns parts of speech (a statistical pipeline) or only tokenizes (``spacy.blank``, the
    lexical rule of :func:`is_punct_token`); ``nlp`` None without spaCy
    (:func:`is_punctuation_text`). ``description`` enters the cache key."""

    nlp: Any
    description: str
    tags: bool = False


def _pipeline_lang(spacy_model: str) -> str:
    """The language of a pipeline package name (``en_core_web_sm``) or directory (its meta.json)."""
    import json
    from pathlib import Path

    meta = Path(spacy_model) / "meta.json"
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text(encoding="utf-8")).get("lang") or "en")
        except (OSError, ValueError):
            return "en"
    return Path(spacy_model).name.split("_", 1)[0] or "en"


def load_tagger(spacy_model: str) -> Tagger:
    """The part-of-speech filter's tagger for ``spacy_model``; without the pipeline, spaCy's
    rule-based tokenizer for its language, and without spaCy nothing. A fallback is announced
    once per process."""
    if spacy_model in _TAGGERS:
        return _TAGGERS[spacy_model]
    fallback = ("falling back to dropping the punctuation marks that stand alone as spaCy tokens "
                "(methods.md, \"Stage 2, reference parity\"; the rule: syllabus.scoring.difficulty._PosFilter)")
    try:
        import spacy
    except ImportError:
        log.warning("token_filter 'pos' needs spaCy, which is not installed (pip install 'syllabus[reference]'); %s",
                    fallback)
        result = Tagger(None, "punctuation rule on token texts (spaCy not installed)")
    else:
        try:
            nlp = spacy.load(spacy_model, disable=["parser", "ner", "lemmatizer"])
        except (OSError, ValueError, ImportError) as exc:
            log.warning("spaCy pipeline %r could not be loaded (%s); install it or set spacy_model to a pipeline "
                        "directory; %s", spacy_model, " ".join(str(exc).split())[:160], fallback)
            blank = None
            # The pipeline's language; "xx" (spaCy's multi-language rules) for a name that
            # spells none, or a language whose tokenizer needs a missing package.
            for lang in dict.fromkeys((_pipeline_lang(spacy_model), "xx")):
                try:
                    blank = spacy.blank(lang)
                    break
                except Exception as exc:
                    log.info("no spaCy tokenizer for language %r: %s", lang, " ".join(str(exc).split())[:160])
            if blank is None:
                result = Tagger(None, f"punctuation rule on token texts (spaCy pipeline {spacy_model} not found)")
            else:
                result = Tagger(blank, f"spacy {spacy.__version__} {lang} tokenizer, punctuation rule "
                                       f"(pipeline {spacy_model} not found)")
        else:
            meta = nlp.meta
            result = Tagger(nlp, f"spacy {spacy.__version__} {meta.get('lang')}_{meta.get('name')} "
                                 f"{meta.get('version')}", tags=True)
    _TAGGERS[spacy_model] = result
    return result


class _PosFilter:
    r"""The authors' filter: a response token is dropped when its text (the tokenizer's own
    string for that one token, special tokens included) equals a word the tagger marks with a
    PAPER_STOP_POS tag in that response (the response with its end marker appended, as in T).

    Without the statistical pipeline (none is installable here) the authors' mechanics stay
    and only the tagger is replaced: spaCy's rule-based tokenizer for the pipeline's language
    (``spacy.blank``, the tokenizer a trained pipeline of that language runs) splits the text,
    and a spaCy token counts as PUNCT by :func:`is_punct_token`. What follows, checked against
    spaCy 3.8's tokenizer:

    - Whitespace is never dropped: spaCy makes "\n" and "\n\n" tokens of their own and tags
      them SPACE; a model token with a space in it (" -", ".\n") equals no spaCy token.
    - Markup runs are never dropped: spaCy splits "**", "##", "```" and "__" into single
      marks, so a model token "**" equals no spaCy token (the previous fallback dropped it).
    - A single mark ("-", "*", "#", ".", ",") is dropped when the same mark stands as its own
      spaCy token anywhere in the response (a bullet, an emphasis star, a sentence end); only
      inside a spaCy word ("COVID-19", "1,000", "e.g.") it is not, and the model token is kept.
    - A model token merging marks (").", "**:", '",') is kept: spaCy splits them.
    - The backtick is a quote to spaCy (``is_quote``) and counts as PUNCT; "<", ">", "|", "=",
      "+" (Unicode symbols) are SYM to a tagger and are kept; so is "%" (NOT_PUNCT).

    The words a tagger marks DET, ADP, CCONJ, SCONJ, PART or INTJ are not recognised without
    it: a sentence-initial "The" is kept (mid-sentence ones, " the", never match anyway).
    Without spaCy at all, :func:`is_punctuation_text` judges each model token text alone.
    """

    def __init__(self, tokenizer: Any, spacy_model: str):
        self.tokenizer = tokenizer
        self.tagger = load_tagger(spacy_model)
        self.description = self.tagger.description
        eot = end_of_turn_text(tokenizer)
        # The authors tag the response with its end marker appended, as it is in T.
        self.suffix = eot if eot is not None else (tokenizer.eos_token or "")
        self.texts: dict[int, str] = {}

    def text(self, token_id: int) -> str:
        hit = self.texts.get(token_id)
        if hit is None:
            tokens = self.tokenizer.convert_ids_to_tokens([token_id])
            hit = self.texts[token_id] = self.tokenizer.convert_tokens_to_string(tokens)
        return hit

    def stop_words(self, response: str) -> set[str] | None:
        """The texts the filter drops in ``response``; None without spaCy (each token judged alone)."""
        nlp = self.tagger.nlp
        if nlp is None:
            return None
        doc = nlp(response + self.suffix)
        if self.tagger.tags:
            return {t.text for t in doc if t.pos_ in PAPER_STOP_POS}
        return {t.text for t in doc if is_punct_token(t)}

    def __call__(self, enc: EncodedPair) -> list[int]:
        positions = range(enc.prompt_len, len(enc.input_ids))
        stop = self.stop_words(enc.response_text)
        if stop is None:
            return [j for j in positions if not is_punctuation_text(self.text(enc.input_ids[j]))]
        return [j for j in positions if self.text(enc.input_ids[j]) not in stop]


def response_filter(cfg: "DifficultyConfig", tokenizer: Any) -> Callable[[EncodedPair], list[int]]:
    """The response positions that carry weight, per ``cfg.token_filter``."""
    if cfg.token_filter == "pos":
        return _PosFilter(tokenizer, cfg.spacy_model)
    if cfg.token_filter == "content":
        content = _ContentTokens(tokenizer)
        return lambda enc: [j for j in range(enc.prompt_len, len(enc.input_ids)) if content(enc.input_ids[j])]
    return lambda enc: list(range(enc.prompt_len, len(enc.input_ids)))


@dataclass
class PassResult:
    """What one forward pass over ``T`` yields for one sequence."""

    d_instruction: float  # D1's value over its span of P: D1 when T = T(y)
    d_response: float  # WD over the response: D3 for T(y), D2 for T(r_hat)
    embedding: np.ndarray | None
    response_tokens: int  # positions that carried weight


def d1_positions(enc: EncodedPair, span: str) -> list[int]:
    """``instruction``: the instruction's positions of ``P``; ``prompt``: every position of ``P``
    after the first (nothing predicts position 0)."""
    return list(enc.instruction_positions) if span == "instruction" else list(range(1, enc.prompt_len))


def analyse_batch(
    model: Any,
    engine: TransformersEngine,
    encs: list[EncodedPair],
    keep: Callable[[EncodedPair], list[int]],
    want_embedding: bool,
    d1_span: str = "instruction",
    importance_kind: str = "mean",
    response_value: str = "exp",
) -> list[PassResult]:
    """One sdpa forward over a right-padded batch of ``T`` sequences; D-values per sequence.
    ``keep(enc)`` names the response positions that carry weight."""
    body, head = decoder_and_head(model)
    ids, mask = engine.pad([e.input_ids for e in encs])
    wanted = torch.zeros_like(mask, dtype=torch.bool)
    d1_spans = [d1_positions(e, d1_span) for e in encs]
    for b, e in enumerate(encs):
        wanted[b, d1_spans[b]] = True
        wanted[b, e.prompt_len : len(e.input_ids)] = True
    weigh = weighted_exp if response_value == "exp" else weighted_mean
    with torch.inference_mode(), LastLayerCapture(model) as cap:
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        nll = token_nll_from_hidden(hidden, head, ids, wanted)
        results = []
        for b, e in enumerate(encs):
            length = len(e.input_ids)
            d_inst = math.exp(span_mean(nll[b], d1_spans[b])) if d1_spans[b] else math.nan
            positions = keep(e)
            d_resp = math.nan
            if positions:
                importance = token_importance(cap.probs(b, length), importance_kind)
                pos = torch.tensor(positions, device=importance.device)
                d_resp = weigh(nll[b, pos].double().tolist(), importance[pos].double().tolist())
            emb = None
            if want_embedding:
                emb = hidden[b, : e.prompt_len].float().mean(dim=0).cpu().numpy().astype(np.float32)
            results.append(PassResult(d_inst, d_resp, emb, len(positions)))
    return results


@registry.scorer("difficulty")
class DifficultyScorer(Scorer):
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = DifficultyConfig

    def columns(self) -> list[str]:
        return [f"difficulty_{c}" for c in ("d1", "d2", "d3", "embedding", "response", "status")]

    def key_parts(self, model_fingerprint: str, shard_hash: str) -> dict[str, Any]:
        """The preset name is left out (the fields it sets carry it), so are fields at the
        defaults they had before they existed; the part-of-speech filter adds the tagger
        that will actually run, since spaCy and its pipelines are optional."""
        parts = super().key_parts(model_fingerprint, shard_hash)
        cfg: DifficultyConfig = self.config
        config = parts["config"]
        config.pop("preset", None)
        config.pop("spacy_model", None)
        for name, default in _KEY_DEFAULTS.items():
            if config.get(name) == default:
                config.pop(name)
        if cfg.token_filter == "pos":
            parts["pos_tagger"] = load_tagger(cfg.spacy_model).description
        return parts

    def score(self, table: pa.Table, lm: Any, engine: TransformersEngine | None = None) -> pa.Table:
        cfg: DifficultyConfig = self.config
        tok, model = lm.tokenizer, lm.model
        engine = engine or TransformersEngine(model, tok, batch_size=cfg.batch_size,
                                              generate_batch_size=cfg.generate_batch_size,
                                              max_batch_tokens=cfg.max_batch_tokens, bucket=cfg.bucket)
        clock = StageClock()
        rows = table.to_pylist()
        n = len(rows)
        status = ["ok"] * n
        d1 = [math.nan] * n
        d2 = [math.nan] * n
        d3 = [math.nan] * n
        emb: list[list[float] | None] = [None] * n
        generated: list[str | None] = [None] * n

        refs: dict[int, EncodedPair] = {}
        prompts: dict[int, EncodedPair] = {}
        for i, row in enumerate(rows):
            try:
                enc = encode_pair(tok, row, cutoff=cfg.cutoff)
                if enc.status != "ok":
                    status[i] = enc.status
                    continue
                refs[i] = enc
                prompts[i] = encode_prompt(tok, row, cutoff=cfg.cutoff)
            except Exception as exc:  # a malformed sample must not end the shard
                status[i] = error_status(exc)

        # r_hat: greedy, batched, bucketed by prompt length.
        order = sorted(prompts)
        with clock.stage("generation", engine, samples=len(order)) as gen_stage:
            gen_ids = engine.generate([prompts[i].input_ids for i in order], cfg.max_new_tokens) if order else []
            gen_stage.tokens = sum(len(prompts[i].input_ids) for i in order) + sum(len(g) for g in gen_ids)
            gen_stage.generated_tokens = sum(len(g) for g in gen_ids)
        owns: dict[int, EncodedPair] = {}
        for i, ids in zip(order, gen_ids):
            generated[i] = tok.decode(ids, skip_special_tokens=True)
            owns[i] = encode_pair(tok, rows[i], response=generated[i], cutoff=cfg.cutoff)

        keep = response_filter(cfg, tok)
        items = [(i, "ref", refs[i]) for i in sorted(refs)] + [(i, "own", owns[i]) for i in sorted(owns)]

        def run(idx: list[int]) -> list[PassResult]:
            encs = [items[k][2] for k in idx]
            want_emb = cfg.embedding and any(items[k][1] == "ref" for k in idx)
            return analyse_batch(model, engine, encs, keep, want_emb, cfg.d1_span, cfg.importance, cfg.response_value)

        with clock.stage("forward", engine, samples=len(refs)):
            results = engine.map_batches([len(it[2].input_ids) for it in items], per_item_fallback(run),
                                         desc="difficulty forward")
        for (i, kind, _), res in zip(items, results):
            if isinstance(res, Failed):
                status[i] = res.status
                continue
            if kind == "ref":
                d1[i], d3[i] = res.d_instruction, res.d_response
                if res.embedding is not None:
                    emb[i] = res.embedding.tolist()
            else:
                d2[i] = res.d_response
        for i in refs:
            if status[i] != "ok":
                continue
            if not math.isfinite(d1[i]):
                status[i] = "error: no instruction tokens found in the prompt"
            elif not math.isfinite(d3[i]):
                status[i] = "error: the reference response has no content tokens within the cutoff"
            elif not math.isfinite(d2[i]):
                status[i] = "error: the model's own response is empty"
        self.last_stats = {"engine": engine.stats.as_dict(), "stages": clock.as_dict()}
        if cfg.token_filter == "pos":
            self.last_stats["pos_tagger"] = keep.description
        return pa.table(
            {
                "sample_id": table.column("sample_id"),
                "difficulty_d1": pa.array(d1, pa.float64()),
                "difficulty_d2": pa.array(d2, pa.float64()),
                "difficulty_d3": pa.array(d3, pa.float64()),
                "difficulty_embedding": pa.array(emb, pa.list_(pa.float32())),
                "difficulty_response": pa.array(generated, pa.string()),
                "difficulty_status": pa.array(status, pa.string()),
            }
        )
