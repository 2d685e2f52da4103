"""The MLflow scrubber hides secret-named keys and URL credentials, and nothing else."""

from __future__ import annotations

import pytest

from syllabus.tracking.lineage import flatten, is_secret_key, scrub


@pytest.mark.parametrize("key", ["token", "hf_token", "HF_TOKEN", "authToken", "api_key", "apiKey", "password",
                                 "aws_secret_access_key", "AWS_ACCESS_KEY_ID", "secret", "credentials", "key"])
def test_secret_keys_are_hidden(key):
    assert is_secret_key(key)
    assert scrub({key: "s3cr3t"}) == {key: "***"}


@pytest.mark.parametrize("key", ["max_new_tokens", "max_batch_tokens", "max_response_tokens", "tokenizer", "author",
                                 "sort_key", "monkey", "batch_size", "cutoff"])
def test_settings_that_merely_mention_tokens_are_kept(key):
    assert not is_secret_key(key)
    assert scrub({key: 48}) == {key: 48}


def test_flattened_params_keep_max_new_tokens_and_hide_url_credentials():
    params = {"scorer_configs": {"difficulty": {"max_new_tokens": 48}},
              "store": "s3://AKIAEXAMPLE:wJalr/XUtn@bucket/prefix", "hf_token": "hf_abc"}
    flat = flatten(params)
    assert flat["scorer_configs.difficulty.max_new_tokens"] == "48"
    assert flat["store"] == "s3://***@bucket/prefix"
    assert flat["hf_token"] == "***"
