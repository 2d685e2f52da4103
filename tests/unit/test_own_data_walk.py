"""docs/your-own-data.md, end to end (issue 33, item 1): every block marked ``<!-- walk -->``
runs as one bash script from the repository root, on a tiny random model and a pool of Alpaca
records and ShareGPT conversations; the exported subset loads with ``datasets`` and the
exported model folder with transformers, which generates from it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "your-own-data.md"


def walk_script() -> str:
    blocks = re.findall(r"<!-- walk -->\n```bash\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6, "the walk's blocks are marked <!-- walk --> in docs/your-own-data.md"
    return "set -euo pipefail\n" + "\n".join(blocks)


def _data(folder: Path) -> None:
    folder.mkdir()
    with open(folder / "alpaca.jsonl", "w") as fh:
        for i in range(40):
            fh.write(json.dumps({"instruction": f"What helps with symptom {i}?", "input": "",
                                 "output": f"For symptom {i}, rest, fluids and a doctor's visit if it lasts."}) + "\n")
    conversations = [{"conversations": [{"from": "human", "value": f"I have had pain number {i} for a week."},
                                        {"from": "gpt", "value": f"Pain number {i} for a week needs an examination."}]}
                     for i in range(20)]
    (folder / "sharegpt.json").write_text(json.dumps(conversations))


def test_the_own_data_walk_runs_and_its_outputs_load(tmp_path, tiny_model_dir):
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _data(tmp_path / "data")
    work = tmp_path / "walk"
    env = dict(os.environ, MODEL=tiny_model_dir, DATA=str(tmp_path / "data"), WORK=str(work), OMP_NUM_THREADS="1")
    run = subprocess.run(["bash", "-c", walk_script()], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "plan: score 60 samples for 3ds" in out and "expected: about" in out
    selected = json.loads((work / "select.log").read_text().strip().splitlines()[-1])
    assert selected["n_selected"] == selected["budget"] == 30 and selected["n_candidates"] == 60
    assert "chosen at rank 1" in out  # `show` printed the why-table

    subset = load_from_disk(str(work / "export" / "my-subset-hf"))
    assert subset.num_rows == 30 and "messages" in subset.column_names
    assert {m["role"] for row in subset["messages"] for m in row} == {"user", "assistant"}
    alpaca = json.loads((work / "export" / "my-subset.json").read_text())
    assert len(alpaca) == 30 and {"instruction", "output"} <= set(alpaca[0])
    info = json.loads((work / "export" / "dataset_info.json").read_text())
    assert info["my-subset"]["file_name"] == "my-subset.json"

    model = AutoModelForCausalLM.from_pretrained(work / "model")
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        new = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert new.shape[1] > prompt["input_ids"].shape[1]
