"""Templating per methods.md: P, E, response and instruction positions, truncation."""

from __future__ import annotations

import pytest

from syllabus.models.chat import encode_pair, encode_prompt, end_of_turn_text, instruction_text, render_prompt

SAMPLE = {
    "instruction": "What causes iron deficiency anemia?",
    "input": "Patient is a 30-year-old woman.",
    "output": "Blood loss, poor intake or poor absorption of iron.",
    "messages": None,
}


def test_instruction_text_appends_input_after_blank_line():
    assert instruction_text(SAMPLE) == "What causes iron deficiency anemia?\n\nPatient is a 30-year-old woman."
    assert instruction_text({"instruction": "Q", "input": "  "}) == "Q"


def test_render_prompt_uses_chat_template_with_generation_prompt(smol_tokenizer):
    p = render_prompt(smol_tokenizer, SAMPLE)
    assert p.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\n" + instruction_text(SAMPLE) + "<|im_end|>" in p


def test_end_of_turn_text_is_text_after_assistant_message_up_to_newline(smol_tokenizer):
    assert end_of_turn_text(smol_tokenizer) == "<|im_end|>"


def test_encode_pair_positions(smol_tokenizer):
    tok = smol_tokenizer
    enc = encode_pair(tok, SAMPLE)
    p_ids = tok(render_prompt(tok, SAMPLE), add_special_tokens=False)["input_ids"]
    assert enc.status == "ok" and not enc.truncated
    assert enc.input_ids[: enc.prompt_len] == p_ids
    assert enc.prompt_len == len(p_ids)
    # the response part decodes back to r + E
    assert tok.decode(enc.input_ids[enc.prompt_len :]) == SAMPLE["output"] + "<|im_end|>"
    # instruction positions decode to x (possibly with bordering characters of a shared token)
    inst = tok.decode([enc.input_ids[i] for i in enc.instruction_positions])
    assert instruction_text(SAMPLE) in inst
    assert "<|im_start|>" not in inst and "system" not in inst
    assert enc.instruction_positions == sorted(enc.instruction_positions)
    assert max(enc.instruction_positions) < enc.prompt_len


def test_explicit_response_replaces_reference(smol_tokenizer):
    enc = encode_pair(smol_tokenizer, SAMPLE, response="Hello.")
    assert smol_tokenizer.decode(enc.input_ids[enc.prompt_len :]) == "Hello.<|im_end|>"


def test_multi_turn_uses_all_turns_before_final_assistant(smol_tokenizer):
    sample = {
        "instruction": "And the treatment?",
        "input": "",
        "output": "Iron supplements.",
        "messages": [
            {"role": "user", "content": "What is anemia?"},
            {"role": "assistant", "content": "Too few red cells."},
            {"role": "user", "content": "And the treatment?"},
            {"role": "assistant", "content": "Iron supplements."},
        ],
    }
    p = render_prompt(smol_tokenizer, sample)
    assert "What is anemia?" in p and "Too few red cells." in p and "Iron supplements." not in p
    enc = encode_pair(smol_tokenizer, sample)
    inst = smol_tokenizer.decode([enc.input_ids[i] for i in enc.instruction_positions])
    assert inst.strip() == "And the treatment?"


def test_truncation_from_end_of_response(smol_tokenizer):
    long = dict(SAMPLE, output="word " * 400)
    full = encode_pair(smol_tokenizer, long)
    cut = encode_pair(smol_tokenizer, long, cutoff=full.prompt_len + 10)
    assert cut.status == "ok" and cut.truncated
    assert len(cut.input_ids) == full.prompt_len + 10
    assert cut.input_ids == full.input_ids[: full.prompt_len + 10]


def test_prompt_longer_than_cutoff_is_too_long(smol_tokenizer):
    enc = encode_pair(smol_tokenizer, SAMPLE, cutoff=5)
    assert enc.status == "too_long"
    assert encode_prompt(smol_tokenizer, SAMPLE, cutoff=5).status == "too_long"


def test_fallback_without_chat_template(smol_tokenizer):
    import copy

    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = None
    assert render_prompt(tok, SAMPLE) == instruction_text(SAMPLE) + "\n"
    assert end_of_turn_text(tok) is None
    enc = encode_pair(tok, SAMPLE)
    assert enc.input_ids[-1] == tok.eos_token_id
    assert tok.decode(enc.input_ids[enc.prompt_len : -1]) == SAMPLE["output"]
    inst = tok.decode([enc.input_ids[i] for i in enc.instruction_positions])
    assert inst.strip() == instruction_text(SAMPLE)
