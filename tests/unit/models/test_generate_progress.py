"""Generation on CPU moves the progress bar token by token (issue 33, item 2): a batch of 32
samples at 256 new tokens used to sit at `generate: 0/150` for many minutes."""

from __future__ import annotations

import torch


def test_the_bar_shows_each_decoding_step_and_the_tokens_are_unchanged(tiny_llama, smol_tokenizer, monkeypatch):
    import tqdm.auto

    from syllabus.models.engines import TransformersEngine

    postfixes: list[str] = []
    real = tqdm.auto.tqdm

    class Recording(real):
        def set_postfix_str(self, s="", refresh=True):
            postfixes.append(s)
            return super().set_postfix_str(s, refresh)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    prompts = [smol_tokenizer("What is anaemia?")["input_ids"], smol_tokenizer("Why?")["input_ids"]]
    torch.manual_seed(0)
    shown = TransformersEngine(tiny_llama, smol_tokenizer, batch_size=2, progress=True).generate(prompts, 6)
    quiet = TransformersEngine(tiny_llama, smol_tokenizer, batch_size=2, progress=False).generate(prompts, 6)
    assert shown == quiet
    steps = [p for p in postfixes if p]
    assert steps[0] == "token 1/6 of this batch"
    numbers = [int(p.split()[1].split("/")[0]) for p in steps]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) <= 6  # one per step, at most max_new_tokens
    assert all(p.endswith("/6 of this batch") for p in steps) and postfixes[-1] == ""  # cleared after the batch
