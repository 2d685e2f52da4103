"""The validation items influence scoring holds out are the ones evaluation leaves out: given
the scorer's own ids (any per_task and seed), exactly those; given none, the default set's."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest

from syllabus.evaluation.benchmarks import Benchmark, load_benchmark
from syllabus.evaluation.heldout import DEFAULT_BENCHMARK, ValidationConfig, default_held_out_ids, held_out_ids
from syllabus.evaluation.runner import EvalConfig, run_evaluation, without_items
from syllabus.scoring.influence import InfluenceScorer
from syllabus.store import Store


def _evaluated_ids(lm, bench: Benchmark, **kwargs) -> set[str]:
    store = Store(f"memory://heldout-{uuid.uuid4().hex[:8]}")
    result = run_evaluation(lm, [bench], store, config=EvalConfig(bootstrap=10, **kwargs.pop("config", {})),
                            progress=False, **kwargs)
    s, key = Store.open_url(result.results_url)
    return set(s.read_table(key).column("item_id").to_pylist())


def test_evaluation_leaves_out_exactly_the_items_the_scorer_held_out(smol_tokenizer, tiny_llama):
    scorer = InfluenceScorer(validation={"per_task": 3, "seed": 5})
    held = scorer.held_out_ids()
    assert list(held) == [DEFAULT_BENCHMARK]
    x = set(held[DEFAULT_BENCHMARK])
    default = set(default_held_out_ids()[DEFAULT_BENCHMARK])
    assert len(x) == 3 * 6 and {f"val-{i}" for i in x} == {s["sample_id"] for s in scorer.validation()}
    leaked = x - default
    assert leaked  # another seed holds out other items: the default-set exclusion leaves these in

    # A small slice of the benchmark under its own name: some held-out items (of this scorer
    # and of the default set) and some items held out by neither.
    full = load_benchmark(DEFAULT_BENCHMARK)
    pick = sorted(leaked)[:4] + sorted(default - x)[:2]
    neither = [it for it in full.items if it.item_id not in x | default][:4]
    items = [next(it for it in full.items if it.item_id == i) for i in pick] + neither
    bench = Benchmark(DEFAULT_BENCHMARK, "mc", items)
    lm = SimpleNamespace(model=tiny_llama, tokenizer=smol_tokenizer, fingerprint="sha256:tiny", ref=None)

    explicit = _evaluated_ids(lm, bench, exclude_ids=held)
    assert explicit == {it.item_id for it in items} - x  # exactly X left out, the default set's items kept
    assert not explicit & x
    standalone = _evaluated_ids(lm, bench)  # no ids: the default set is left out, so X would leak
    assert standalone == {it.item_id for it in items} - default and standalone & x == set(pick[:4])
    # The same ids through the config give the same evaluation (one key, one result).
    assert _evaluated_ids(lm, bench, config={"exclude_ids": held}) == explicit


def test_exclusion_rules_of_eval_config():
    names = [DEFAULT_BENCHMARK, "toy"]
    assert EvalConfig().held_out(["toy"]) == {}  # the default set is never loaded for other benchmarks
    default = EvalConfig().held_out(names)
    assert list(default) == [DEFAULT_BENCHMARK] and len(default[DEFAULT_BENCHMARK]) == 20 * 6
    assert EvalConfig(exclude_validation=False).held_out(names) == {}
    assert EvalConfig(exclude_ids={}).held_out(names) == {}  # given ids replace the default set, even none
    assert EvalConfig(exclude_ids={"toy": ["b", "a", "b"]}).held_out(names) == {"toy": ("a", "b")}
    with pytest.raises(ValueError, match="exclude_validation"):
        EvalConfig(exclude_ids={"toy": ["a"]}, exclude_validation=False)
    # No ids given: the config spells its key as before the field existed.
    assert "exclude_ids" not in EvalConfig().key_dump()
    assert EvalConfig(exclude_ids={"t": ["b", "a"]}).key_dump()["exclude_ids"] == {"t": ["a", "b"]}
    assert EvalConfig(exclude_ids={}).key_dump()["exclude_ids"] == {}  # nothing left out: not the default


def test_the_default_validation_set_given_explicitly_keys_the_evaluation_as_the_default():
    """A DIQ or LESS run passes its validation ids (by default the default set) as exclude_ids;
    a run without an influence scorer gives none. Both leave out the same items, so an adapter
    both evaluate must have one evaluation key, not two."""
    diq = held_out_ids(ValidationConfig())  # what the influence scorer reports by default
    assert EvalConfig(exclude_ids=diq).key_dump() == EvalConfig().key_dump()
    assert EvalConfig(exclude_ids=diq).held_out(list(diq)) == EvalConfig().held_out(list(diq))
    fewer = {name: list(ids)[1:] for name, ids in default_held_out_ids().items()}
    assert "exclude_ids" in EvalConfig(exclude_ids=fewer).key_dump()  # another set: another key


def test_without_items_and_a_validation_file(tmp_path):
    bench = load_benchmark(DEFAULT_BENCHMARK)
    held = set(default_held_out_ids()[DEFAULT_BENCHMARK])
    kept = without_items(bench, held)
    assert held and not held & {it.item_id for it in kept.items}
    assert len(kept.items) == sum(it.item_id not in held for it in bench.items)
    # A validation file is used whole, under the name evaluation gives that file.
    path = tmp_path / "val.jsonl"
    path.write_text('{"question": "Q1?", "options": ["a", "b"], "answer": "A", "id": "q1"}\n'
                    '{"question": "Q2?", "options": ["a", "b"], "answer": "B", "id": "q2"}\n')
    assert held_out_ids(ValidationConfig(source=str(path))) == {load_benchmark(str(path)).name: ["q1", "q2"]}


def test_held_out_ids_from_a_score_manifest():
    from syllabus.evaluation.heldout import held_out_ids_of
    from syllabus.scoring.manifest import ScoreManifest

    store = Store(f"memory://manifest-{uuid.uuid4().hex[:8]}")
    ids = InfluenceScorer(validation={"per_task": 2, "seed": 1}).held_out_ids()

    def commit(name: str, **fields) -> str:
        manifest = ScoreManifest(scorer=name, version=1, config={}, model_fingerprint="m", pool_manifest="p",
                                 shards=[], samples=0, **fields)
        store.commit(f"scores/manifests/{name}.json", json.dumps(manifest.to_json()).encode(), {"scorer": name})
        return store.url(f"scores/manifests/{name}.json")

    assert held_out_ids_of(commit("influence", validation_ids=ids)) == ids
    with pytest.raises(ValueError, match="records no validation_ids"):
        held_out_ids_of(commit("ifd"))
    store.commit("scores/manifests/other.json", json.dumps({"scorer": "ifd"}).encode(), {"scorer": "ifd"})
    with pytest.raises(ValueError, match="is not a score manifest .*shards"):
        held_out_ids_of(store.url("scores/manifests/other.json"))
