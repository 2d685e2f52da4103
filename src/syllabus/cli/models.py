"""``syllabus models`` (the model names and where their files come from) and
``syllabus model export`` (a model as a Hugging Face folder for LLaMA-Factory or TRL)."""

from __future__ import annotations

import argparse
import json

from syllabus.cli import flags
from syllabus.models.ref import ALIAS_DESCRIPTIONS, ALIAS_INSTALL_HINT, ALIASES, alias_file

OTHER_REFERENCES = (
    "--model also takes a .gguf file, a Hugging Face model folder (config.json and weights) "
    "or a hub id such as org/name@<commit> (needs internet)"
)


def models_epilog() -> str:
    """The model names for ``syllabus --help`` (no torch, no package import)."""
    names = ", ".join(f"{name} ({ALIAS_DESCRIPTIONS[name].split(' (')[0]})" for name in sorted(ALIASES))
    return f"models: {names}; {OTHER_REFERENCES}. `syllabus models` says where each comes from and whether it is installed."


def model_rows() -> list[dict]:
    rows = []
    for name in sorted(ALIASES):
        package, filename = ALIASES[name]
        path = alias_file(name)
        rows.append({
            "name": name,
            "description": ALIAS_DESCRIPTIONS[name],
            "source": f"{filename} in the Python package {package} (`{ALIAS_INSTALL_HINT[name]}`)",
            "installed": path is not None,
            "path": str(path) if path is not None else None,
        })
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_models, epilog=f"{OTHER_REFERENCES}.")
    flags.add(p, "json", json={"help": "print the list as JSON"})

    msub = flags.group(sub, "model", "model tools: `model export NAME --out DIR` writes a Hugging Face folder for "
                       "LLaMA-Factory or TRL", "Model tools.")
    e = flags.command(msub, cmd_model_export, "export")
    e.add_argument("name", metavar="NAME", help="model alias (see `syllabus models`), .gguf file, HF folder or hub id")
    e.add_argument("--out", required=True, metavar="DIR", help="the folder to create (refused if it holds files, unless --overwrite)")
    e.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    e.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="weight type (default float32: the dequantized GGUF values exactly; bfloat16 halves the size)")
    flags.add(e, "json")


def cmd_models(args: argparse.Namespace) -> int:
    """list the model names --model accepts, what they are, where their files come from

    The model aliases Syllabus ships, what each is, the package its files come from, and whether
    it is installed here."""
    rows = model_rows()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        state = f"installed: {row['path']}" if row["installed"] else "not installed"
        print(f"{row['name']}\n  {row['description']}\n  from: {row['source']}\n  {state}")
    print(OTHER_REFERENCES + ".")
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    """write a model as a Hugging Face folder (safetensors, config, tokenizer, chat template)

    Write a model (an alias such as smollm2-135m, a .gguf file, a Hugging Face folder or a hub id)
    as a Hugging Face folder that LLaMA-Factory, TRL and transformers 4 or 5 load: safetensors
    weights (the GGUF's values dequantized), config.json, generation_config.json, tokenizer.json and
    tokenizer_config.json with the chat template. The eos token is the one the chat template ends
    each assistant turn with (<|im_end|> for SmolLM2-Instruct). The folder is written beside DIR and
    renamed into place."""

    from dataclasses import asdict

    from syllabus.models.export import export_model

    result = export_model(args.name, args.out, overwrite=args.overwrite, dtype=args.dtype)
    print(f"exported {result.source} to {result.out} ({result.dtype}) in {result.seconds:.1f} s")
    print(f"  eos {result.eos_token}: {result.eos_reason}")
    print(f"  files: {', '.join(result.files)}")
    print(f"  load it with AutoModelForCausalLM.from_pretrained({result.out!r}), or as model_name_or_path in "
          "LLaMA-Factory and TRL")
    if args.json:
        print(json.dumps(asdict(result)))
    return 0
