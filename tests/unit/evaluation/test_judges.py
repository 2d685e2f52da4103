"""Judges: an OpenAI-compatible fake server on 127.0.0.1 (started and stopped here) and a tiny local model."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from syllabus.evaluation.judges import (
    RUBRIC,
    LocalJudge,
    OpenAIJudge,
    clinical_rubric,
    expected_score,
    pairwise_win_rate,
)
from syllabus.models.chat import encode_prompt


class FakeJudgeServer:
    """Answers /v1/chat/completions. Pairwise: prefers whichever answer contains GOOD (p = 0.9).
    Rubric: P("4") = P("5") = 0.5 with logprobs, or the bare text "3" in no-logprob mode."""

    def __init__(self, with_logprobs: bool = True):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                prompt = body["messages"][0]["content"]
                if "Answer A:" in prompt:
                    a_part = prompt.split("Answer A:")[1].split("Answer B:")[0]
                    good_first = "GOOD" in a_part
                    top = [{"token": "A", "logprob": math.log(0.9 if good_first else 0.1)},
                           {"token": "B", "logprob": math.log(0.1 if good_first else 0.9)}]
                    text = "A" if good_first else "B"
                else:
                    top = [{"token": "4", "logprob": math.log(0.5)}, {"token": " 5", "logprob": math.log(0.5)},
                           {"token": "x", "logprob": math.log(1e-9)}]
                    text = "3"
                choice = {"index": 0, "message": {"role": "assistant", "content": text}}
                if with_logprobs:
                    choice["logprobs"] = {"content": [{"token": text, "logprob": -0.1, "top_logprobs": top}]}
                data = json.dumps({"choices": [choice]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


QUESTIONS = [f"Question {i}: what should I do about symptom {i}?" for i in range(12)]


def test_pairwise_win_rate_randomises_order_and_reads_back():
    with FakeJudgeServer() as server:
        judge = OpenAIJudge("fake-judge", base_url=server.base_url, api_key="testkey")
        rows, summary = pairwise_win_rate(judge, QUESTIONS, ["GOOD answer"] * 12, ["bad answer"] * 12, seed=1, progress=False)
        assert summary["win_rate"] == 1.0 and summary["judged"] == 12
        assert summary["mean_p_model1"] == pytest.approx(0.9)
        swaps = [r["swapped"] for r in rows]
        assert 0 < sum(swaps) < 12  # both orders were shown
        shown_first = ["GOOD" in req["messages"][0]["content"].split("Answer B:")[0] for req in server.requests]
        assert shown_first == [not s for s in swaps]
        assert server.headers[0]["Authorization"] == "Bearer testkey"
        assert server.requests[0]["model"] == "fake-judge" and server.requests[0]["logprobs"] is True
        # the other way round, model 1 always loses
        _, summary = pairwise_win_rate(judge, QUESTIONS, ["bad"] * 12, ["GOOD"] * 12, seed=1, progress=False)
        assert summary["win_rate"] == 0.0


def test_rubric_expected_score_and_text_fallback():
    with FakeJudgeServer() as server:
        judge = OpenAIJudge("fake", base_url=server.base_url, api_key="")
        rows, summary = clinical_rubric(judge, QUESTIONS[:2], ["answer", "answer"], progress=False)
        # P(4) = P(5) = 0.5 -> 4.5 on every dimension
        for dim in RUBRIC:
            assert summary[f"rubric_{dim}"] == pytest.approx(4.5)
        assert summary["rubric_mean"] == pytest.approx(4.5)
        assert len(server.requests) == 2 * len(RUBRIC)
        assert "Authorization" not in server.headers[0]
    with FakeJudgeServer(with_logprobs=False) as server:
        judge = OpenAIJudge("fake", base_url=server.base_url)
        _, summary = clinical_rubric(judge, QUESTIONS[:1], ["answer"], progress=False)
        assert summary["rubric_mean"] == pytest.approx(3.0)


def test_openai_judge_errors_are_sentences(monkeypatch):
    monkeypatch.delenv("SYLLABUS_JUDGE_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="base URL"):
        OpenAIJudge("m")
    with FakeJudgeServer() as server:
        judge = OpenAIJudge("m", base_url=server.base_url.replace("/v1", "/v2"))
        with pytest.raises(RuntimeError, match="HTTP 404"):
            judge.choice_probs("x", ["A", "B"])


def test_expected_score_by_hand():
    assert expected_score([0.1, 0.2, 0.3, 0.4, 0.0], [1, 2, 3, 4, 5]) == pytest.approx(0.1 + 0.4 + 0.9 + 1.6)


def test_local_judge_reads_next_token_distribution(smol_tokenizer, tiny_llama):
    judge = LocalJudge(tiny_llama, smol_tokenizer)
    probs = judge.choice_probs("Is A or B better?", ["A", "B"])
    ids = encode_prompt(smol_tokenizer, {"instruction": "Is A or B better?"}).input_ids
    with torch.no_grad():
        p = torch.softmax(tiny_llama(input_ids=torch.tensor([ids])).logits[0, -1], dim=-1)
    mass = [float(p[judge._choice_ids(c)].sum()) for c in ("A", "B")]
    assert probs == pytest.approx([mass[0] / sum(mass), mass[1] / sum(mass)], abs=1e-5)
    assert sum(probs) == pytest.approx(1.0)
    rows, summary = clinical_rubric(judge, ["q"], ["a"], progress=False)
    assert 1.0 <= summary["rubric_mean"] <= 5.0
