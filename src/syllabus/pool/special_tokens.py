"""Strings that spell the chat-template tokens of the tokenizers Syllabus supports.

A scraped or crowdsourced record may hold ``<|im_end|>``, ``<s>`` or ``[INST]``: pasted chat
logs, an attacker's attempt to end the user turn and write the assistant's reply, or a rating.
Every encoder in :mod:`syllabus.models.chat` tokenizes such text as characters, never as the
token, whichever tokenizer is used; ingest (tokenizer-free) counts the records that contain
them, per spelling and per family, in the manifest and the summary, and the pool option
``special_tokens`` decides what happens to them:

- ``keep`` (default): the record is kept as it is; the strings stay text.
- ``quarantine``: the record goes to the quarantine with code ``special_tokens`` and a reason
  naming the spellings found.

The families cover the project's default model (SmolLM2: ChatML and its StarCoder-style code
tokens) and the usual open chat models; a string of another tokenizer still stays text in
every encoder, it is only not counted here.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

POLICIES: tuple[str, ...] = ("keep", "quarantine")

FAMILIES: dict[str, tuple[str, ...]] = {
    # SmolLM2, Qwen, and every ChatML model; GPT-2's end of text.
    "chatml": ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    # SmolLM2's (StarCoder's) code-data tokens, special in its tokenizer.
    "starcoder": ("<repo_name>", "<reponame>", "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>",
                  "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
                  "<jupyter_output>", "<jupyter_script>", "<empty_output>"),
    "qwen": ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
             "<|vision_start|>", "<|vision_end|>", "<|object_ref_start|>", "<|object_ref_end|>"),
    # Llama 2 and Mistral: BOS/EOS and the instruction tags.
    "llama2": ("<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
    "llama3": ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
               "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_*|>"),
    "gemma": ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
    "phi3": ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    "deepseek": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"),
}
FAMILY_OF: dict[str, str] = {token: family for family, tokens in FAMILIES.items() for token in tokens}
_RESERVED = re.compile(r"<\|reserved_special_token_\d+\|>")
_LITERALS = sorted((t for t in FAMILY_OF if "*" not in t), key=len, reverse=True)
_PATTERN = re.compile("|".join([_RESERVED.pattern, *map(re.escape, _LITERALS)]))


def spelled_tokens(texts: Iterable[str]) -> list[str]:
    """The special-token spellings the texts contain, sorted (a Llama 3 reserved token is
    reported as ``<|reserved_special_token_*|>``)."""
    found: set[str] = set()
    for text in texts:
        if text and ("<" in text or "[" in text):
            for m in _PATTERN.finditer(text):
                token = m.group()
                found.add("<|reserved_special_token_*|>" if _RESERVED.fullmatch(token) else token)
    return sorted(found)



def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"special-token policy {policy!r} is not one of {', '.join(POLICIES)}: 'keep' keeps such "
                         "records (their text stays text), 'quarantine' moves them to the quarantine")


def quarantine_reason(tokens: list[str]) -> str:
    shown = ", ".join(f'"{t}"' for t in tokens[:5]) + (f" and {len(tokens) - 5} more" if len(tokens) > 5 else "")
    return (f"the record spells the chat-template token(s) {shown} in its text; it was quarantined by "
            "--special-tokens quarantine (use keep to ingest it, the strings then stay plain text)")


class SpecialTokenCounts:
    """Records that spell special tokens: per spelling and per family (a record counts once
    under each spelling and family it contains)."""

    def __init__(self, policy: str = "keep"):
        check_policy(policy)
        self.policy = policy
        self.records = 0
        self.by_token: Counter = Counter()
        self.by_family: Counter = Counter()

    def add(self, tokens: list[str]) -> None:
        if not tokens:
            return
        self.records += 1
        self.by_token.update(tokens)
        self.by_family.update({FAMILY_OF[t] for t in tokens})

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "records": self.records,
            "by_token": dict(sorted(self.by_token.items())),
            "by_family": dict(sorted(self.by_family.items())),
        }
