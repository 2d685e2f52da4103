"""The transformers engine's batching: order preserved, buckets, OOM back-off recorded."""

from __future__ import annotations

import pytest

from syllabus.models.engines import TransformersEngine, is_oom


class _Tok:
    pad_token_id = 0
    eos_token_id = 0


def _engine(**kw):
    return TransformersEngine(model=None, tokenizer=_Tok(), progress=False, **kw)


def test_results_come_back_in_input_order_and_buckets_group_similar_lengths():
    lengths = [5, 100, 7, 98, 6, 99]
    seen = []
    eng = _engine(batch_size=3, max_batch_tokens=None)
    out = eng.map_batches(lengths, lambda idx: (seen.append(sorted(idx)), [lengths[i] * 10 for i in idx])[1])
    assert out == [x * 10 for x in lengths]
    assert seen == [[1, 3, 5], [0, 2, 4]]
    assert eng.stats.padded_tokens == 3 * 100 + 3 * 7 and eng.stats.real_tokens == sum(lengths)
    unbucketed = _engine(batch_size=3, max_batch_tokens=None, bucket=False)
    unbucketed.map_batches(lengths, lambda idx: idx)
    assert unbucketed.stats.padded_tokens == 3 * 100 + 3 * 99 > eng.stats.padded_tokens


def test_max_batch_tokens_caps_padded_batch():
    eng = _engine(batch_size=8, max_batch_tokens=250)
    sizes = []
    eng.map_batches([100] * 5, lambda idx: (sizes.append(len(idx)), idx)[1])
    assert sizes == [2, 2, 1]


def test_oom_halves_batch_size_and_retries():
    eng = _engine(batch_size=8, max_batch_tokens=None)

    def fn(idx):
        if len(idx) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [i + 1 for i in idx]

    assert eng.map_batches(list(range(10)), fn) == [i + 1 for i in range(10)]
    assert [(b["from"], b["to"]) for b in eng.stats.oom_backoffs] == [(8, 4), (4, 2)]
    assert eng.batch_sizes["forward"] == 2 and eng.batch_sizes["generate"] == 8


def test_other_errors_propagate_and_single_item_oom_raises():
    eng = _engine(batch_size=1)
    with pytest.raises(RuntimeError, match="out of memory"):
        eng.map_batches([1], lambda idx: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(ValueError):
        _engine(batch_size=4).map_batches([1, 2], lambda idx: (_ for _ in ()).throw(ValueError("bad")))
    assert is_oom(MemoryError()) and not is_oom(ValueError("out of memory"))
