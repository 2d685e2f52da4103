"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from syllabus.evaluation import metrics


def test_bleu1_is_clipped_unigram_precision_times_brevity_penalty():
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": 5 of 6 unigrams match, equal lengths.
    out = metrics.bleu_scores(["the cat sat on the mat"], ["the cat is on the mat"], lang="en")
    assert out["bleu1"] == pytest.approx(100 * 5 / 6, abs=1e-6)


def test_bleu1_brevity_penalty_and_clipping():
    # hyp "the the the" vs ref "the cat is on the mat": clipped matches 2 of 3 ("the" appears twice in ref);
    # BP = exp(1 - 6/3) = e^-1.
    out = metrics.bleu_scores(["the the the"], ["the cat is on the mat"], lang="en")
    assert out["bleu1"] == pytest.approx(100 * (2 / 3) * math.exp(-1), abs=1e-6)


def test_bleu4_geometric_mean_of_precisions():
    # hyp = "a b c d e f", ref = "a b c d e g": p1 = 5/6, p2 = 4/5, p3 = 3/4, p4 = 2/3, BP = 1.
    out = metrics.bleu_scores(["a b c d e f"], ["a b c d e g"], lang="en")
    expected = 100 * (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    assert out["bleu4"] == pytest.approx(expected, abs=1e-6)
    assert out["bleu1"] == pytest.approx(100 * 5 / 6, abs=1e-6)


def test_bleu_chinese_is_character_level():
    # 4 of the hypothesis' 7 characters are in the reference; BP = 1 because hyp is longer.
    out = metrics.bleu_scores(["我爱北京天安门"], ["我爱北京"])
    assert out["bleu1"] == pytest.approx(100 * 4 / 7, abs=1e-6)


def test_rouge_hand_computed():
    # unigram overlap 5 of 6 each way -> R1 F = 5/6; bigrams: hyp has 5, ref has 5, 3 shared -> R2 F = 3/5;
    # LCS "the cat on the mat" = 5 -> RL F = 5/6.
    out = metrics.rouge_scores(["the cat sat on the mat"], ["the cat is on the mat"], lang="en")
    assert out["rouge1"] == pytest.approx(5 / 6)
    assert out["rouge2"] == pytest.approx(3 / 5)
    assert out["rougeL"] == pytest.approx(5 / 6)


def test_rouge_chinese_characters_are_not_erased():
    # reference 4 chars, hypothesis 7 chars, 4 shared: P = 4/7, R = 1, F = 2PR/(P+R) = 8/11.
    out = metrics.rouge_scores(["我爱北京天安门"], ["我爱北京"])
    assert out["rouge1"] == pytest.approx(8 / 11)
    assert out["rougeL"] == pytest.approx(8 / 11)


def test_bootstrap_ci_brackets_mean_and_is_seeded():
    values = [1] * 30 + [0] * 70
    lo, hi = metrics.bootstrap_ci(values, n_resamples=2000, seed=3)
    assert lo < 0.3 < hi
    # the normal-approximation half width is 1.96 * sqrt(.3 * .7 / 100) = 0.0898
    assert (hi - lo) / 2 == pytest.approx(0.0898, abs=0.015)
    assert metrics.bootstrap_ci(values, n_resamples=2000, seed=3) == (lo, hi)
    assert metrics.bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_accuracy_summary_per_subject():
    out = metrics.accuracy_summary([1, 0, 1, 1], ["a", "a", "b", "b"], n_resamples=200)
    assert out["accuracy"] == 0.75 and out["n"] == 4
    assert out["per_subject"]["a"]["accuracy"] == 0.5
    assert out["per_subject"]["b"]["accuracy"] == 1.0
    assert out["per_subject"]["b"]["ci_low"] == 1.0
    assert np.isnan(metrics.accuracy_summary([])["accuracy"])


def test_detect_language():
    assert metrics.detect_language(["你好世界", "hello"]) == "en"  # tie -> not a majority
    assert metrics.detect_language(["你好世界", "头痛怎么办", "ok"]) == "zh"
