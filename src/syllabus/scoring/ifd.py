"""IFD, Instruction-Following Difficulty (Li et al., NAACL 2024; arXiv 2308.12032), and the
Superfiltering ratio (Li et al., ACL 2024; arXiv 2402.00530).

``IFD = mean NLL(y | P) / mean NLL(y alone)`` (methods.md, "Baselines"): IFD near or above 1
means the instruction does not help predict the response; selection drops IFD > 1 and takes the
highest. Higher = harder. Three presets (``preset``):

- ``default`` (ours): ``P`` is the model's chat template (:mod:`syllabus.models.chat`); the
  conditioned loss is over the response positions of ``T(y) = P + y + E``, the "alone" one over
  the tokens of ``y + E`` after a single start token (BOS, else EOS), so every response token
  has a prediction.
- ``reference``: Cherry_LLM's published code (``cherry_seletion/data_analysis.py`` and
  ``data_by_IFD.py``). ``P`` is the Alpaca prompt (no chat template), which ends in
  ``### Response:``; the "alone" context is ``### Response:`` + y, so ``y`` follows the same
  text in both passes; no end-of-turn token is scored; the tokenizer's own special tokens (BOS
  on LLaMA) are added as its ``encode`` adds them.
- ``superfiltering``: Superfiltering's code (``code_ifd/data_analysis.py``, meant for a small
  proxy model such as GPT-2). ``P`` is ``instruction + "\\n"`` (``+ input + "\\n"`` when there
  is one); the "alone" pass is ``y`` tokenized on its own, scored from its second token when
  the tokenizer adds no BOS (a Hugging Face ``labels=input_ids`` loss). ``ifd_score`` is the
  perplexity ratio ``exp(mean NLL(y | P)) / exp(mean NLL(y alone))``: the same ``< 1`` filter
  as IFD, a different ranking.

Both authors' formats are single-turn: for a conversation the presets read the canonical
``instruction`` (its last user turn) and ``output`` (its last assistant turn) and leave the
earlier turns out.

Truncation: ``P + y`` is cut at ``cutoff`` tokens from the end of the response, and the
"alone" sequence is cut after the same answer tokens, so both means cover the same tokens
(Cherry's code aims at this with ``max_length - len(P) - 2``, an offset worked out for its
"wiz" prompt that leaves the Alpaca prompt's "alone" span a few tokens short; here the spans
match exactly. Superfiltering cuts ``y`` alone at ``max_length - len(P) + 1`` tokens, which is
reproduced). ``default`` used to cut both sequences at the cutoff, which gave the "alone" mean
up to ``len(P)`` more answer tokens. Only samples whose response is cut changed with the fix,
but a cache key covers a whole shard and cannot tell, so the fix is version 2 and every IFD
shard scored by version 1 is rescored (``last_stats`` counts the cut samples). A prompt that leaves no answer token within the cutoff gives ``too_long`` (the
authors' code skips it). Samples with IFD > 1 are dropped by the recipes' selector, not here.
In the presets, sample text stays text: strings that spell the tokenizer's special tokens are
not read as special tokens.

Every pass goes through the engine's ``token_nll`` (the shared token-loss function), so the
transformers and vLLM engines compute the same numbers.

Columns: ``ifd_score``, ``ifd_nll_conditioned``, ``ifd_nll_alone`` (mean NLLs in nats),
``ifd_status``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
import pyarrow as pa

from syllabus import registry
from syllabus.models.chat import DEFAULT_CUTOFF, encode_pair, encode_text, end_of_turn_text
from syllabus.models.engines import TransformersEngine
from syllabus.scoring.base import Scorer, ScorerConfig, error_status

# Cherry_LLM's Alpaca prompts, verbatim: the response follows "### Response:" directly.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
RESPONSE_PREFIX = "### Response:"

Preset = Literal["default", "reference", "superfiltering"]


class IFDConfig(ScorerConfig):
    key_defaults: ClassVar[dict[str, Any]] = {"preset": "default"}  # came after version 1's configs
    # "default": ours (chat template, [start] + y + E alone); "reference": Cherry_LLM's code;
    # "superfiltering": Superfiltering's code and its perplexity ratio.
    preset: Preset = "default"
    cutoff: int = DEFAULT_CUTOFF
    batch_size: int = 8
    max_batch_tokens: int = 16384
    bucket: bool = True


@dataclass(frozen=True)
class IFDSequences:
    """The two passes of one sample: token ids and the positions whose NLL is averaged."""

    conditioned: list[int]
    conditioned_positions: list[int]
    alone: list[int]
    alone_positions: list[int]
    status: str = "ok"  # "ok" | "too_long"
    truncated: bool = False  # the response was cut at the cutoff


def response_alone_ids(tokenizer: Any, response: str, cutoff: int) -> list[int]:
    """``[start] + tokenize(y + E)`` truncated at ``cutoff`` (the default preset)."""
    eot = end_of_turn_text(tokenizer)
    # The response is data: a spelled "<|im_end|>" stays text, only E's own is the token.
    ids = encode_text(tokenizer, response + (eot or ""), [(0, len(response))])[0]
    if eot is None and tokenizer.eos_token_id is not None:
        ids = ids + [int(tokenizer.eos_token_id)]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ([int(start)] + list(ids))[:cutoff]


def _field(sample: Any, name: str) -> str:
    value = sample.get(name) if isinstance(sample, Mapping) else getattr(sample, name, None)
    return value or ""


def alpaca_prompt(sample: Any) -> str:
    """Cherry_LLM's prompt: the Alpaca template, with the input block when there is one."""
    instruction, inp = _field(sample, "instruction"), _field(sample, "input")
    if inp == "":
        return ALPACA_PROMPT_NO_INPUT.format_map({"instruction": instruction})
    return ALPACA_PROMPT_INPUT.format_map({"instruction": instruction, "input": inp})


def plain_prompt(sample: Any) -> str:
    """Superfiltering's prompt (its ``none`` format): the instruction and input, one line each."""
    instruction, inp = _field(sample, "instruction"), _field(sample, "input")
    return f"{instruction}\n" if inp == "" else f"{instruction}\n{inp}\n"


def _ids(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[int]:
    # split_special_tokens: a sample that spells "<|im_end|>" gets those characters, not the token.
    return list(tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"])


def _joined(tokenizer: Any, prefix: str, response: str) -> tuple[list[int], int]:
    """``tokenize(prefix + response)`` and where the response starts (``len(tokenize(prefix))``,
    as the authors' ``len(tokenizer.encode(text[:text.rfind(y)]))``). When the tokenizer merges
    characters across the boundary, the response is tokenized on its own after the prefix's ids."""
    p_ids = _ids(tokenizer, prefix)
    ids = _ids(tokenizer, prefix + response)
    if ids[: len(p_ids)] != p_ids:
        ids = p_ids + _ids(tokenizer, response, add_special_tokens=False)
    return ids, len(p_ids)


def encode_default(tokenizer: Any, sample: Any, cutoff: int) -> IFDSequences:
    """The default preset's passes: ``P + y + E`` and ``[start] + y + E``; a response cut at
    the cutoff cuts the "alone" sequence after the same answer tokens."""
    enc = encode_pair(tokenizer, sample, cutoff=cutoff)
    if enc.status != "ok":
        return IFDSequences([], [], [], [], enc.status, enc.truncated)
    alone = response_alone_ids(tokenizer, _field(sample, "output"), cutoff)
    if enc.truncated:
        # Uncut samples get version 1's numbers; only a cut response's "alone" span changes.
        alone = alone[: 1 + len(enc.input_ids) - enc.prompt_len]
    return IFDSequences(enc.input_ids, enc.response_positions, alone, list(range(1, len(alone))), "ok", enc.truncated)


def encode_authors(tokenizer: Any, sample: Any, cutoff: int, preset: str) -> IFDSequences:
    """The ``reference`` (Cherry_LLM) or ``superfiltering`` preset's passes."""
    response = _field(sample, "output")
    prompt = alpaca_prompt(sample) if preset == "reference" else plain_prompt(sample)
    full, start = _joined(tokenizer, prompt, response)
    if start >= cutoff:
        return IFDSequences([], [], [], [], "too_long", True)
    conditioned = full[:cutoff]
    n_answer = len(conditioned) - start
    if preset == "reference":
        alone_full, alone_start = _joined(tokenizer, RESPONSE_PREFIX, response)
        alone = alone_full[: alone_start + n_answer]
    else:
        # Superfiltering: y on its own, cut at max_length - len(P) + 1, scored after its first token.
        alone_start = 1
        alone = _ids(tokenizer, response)[: cutoff - start + 1]
    return IFDSequences(conditioned, list(range(start, len(conditioned))), alone,
                        list(range(alone_start, len(alone))), "ok", len(full) > cutoff)


def encode_ifd(tokenizer: Any, sample: Any, cutoff: int, preset: str = "default") -> IFDSequences:
    if preset == "default":
        return encode_default(tokenizer, sample, cutoff)
    return encode_authors(tokenizer, sample, cutoff, preset)


@registry.scorer("ifd")
class IFDScorer(Scorer):
    version: ClassVar[int] = 2  # 2: the "alone" span of a cut response is aligned
    config_cls: ClassVar[type[ScorerConfig]] = IFDConfig

    def columns(self) -> list[str]:
        return ["ifd_score", "ifd_nll_conditioned", "ifd_nll_alone", "ifd_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        cfg: IFDConfig = self.config
        tok = lm.tokenizer
        engine = engine or TransformersEngine(lm.model, tok, batch_size=cfg.batch_size,
                                              max_batch_tokens=cfg.max_batch_tokens, bucket=cfg.bucket)
        rows = table.to_pylist()
        n = len(rows)
        status = ["ok"] * n
        seqs, wanted, owner = [], [], []
        truncated = 0
        for i, row in enumerate(rows):
            try:
                enc = encode_ifd(tok, row, cfg.cutoff, cfg.preset)
            except Exception as exc:
                status[i] = error_status(exc)
                continue
            if enc.status != "ok":
                status[i] = enc.status
                continue
            truncated += enc.truncated
            seqs += [enc.conditioned, enc.alone]
            wanted += [enc.conditioned_positions, enc.alone_positions]
            owner.append(i)
        nll = engine.token_nll(seqs, wanted) if seqs else []
        cond = [math.nan] * n
        alone_nll = [math.nan] * n
        for k, i in enumerate(owner):
            c, a = nll[2 * k], nll[2 * k + 1]
            cond[i] = float(np.nanmean(c)) if np.isfinite(c).any() else math.nan
            alone_nll[i] = float(np.nanmean(a)) if np.isfinite(a).any() else math.nan
            if not (math.isfinite(cond[i]) and math.isfinite(alone_nll[i])):
                status[i] = "error: no response tokens within the cutoff"
        score = [self._score(c, a) for c, a in zip(cond, alone_nll)]
        self.last_stats = {"engine": engine.stats.as_dict(), "truncated": truncated}
        return pa.table(
            {
                "sample_id": table.column("sample_id"),
                "ifd_score": pa.array(score, pa.float64()),
                "ifd_nll_conditioned": pa.array(cond, pa.float64()),
                "ifd_nll_alone": pa.array(alone_nll, pa.float64()),
                "ifd_status": pa.array(status, pa.string()),
            }
        )

    def _score(self, cond: float, alone: float) -> float:
        if not (math.isfinite(cond) and math.isfinite(alone)):
            return math.nan
        if self.config.preset == "superfiltering":
            return math.exp(cond - alone)  # ppl(y | P) / ppl(y): < 1 exactly when IFD < 1
        return cond / alone if alone > 0 else math.nan
