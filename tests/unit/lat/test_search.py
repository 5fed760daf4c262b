"""The evolutionary search over a synthetic evaluator: front, genes, reproducibility, resume."""
import json
import math
import random

import pytest

from qbert.errors import ConfigError, DataError
from qbert.lat import (
    Record,
    SearchSettings,
    Store,
    best_under,
    crossover,
    encoder_macs,
    evolutionary_search,
    initial_genes,
    mutate,
    pareto_front,
    save_search,
)

LAYERS, LENGTH = 4, 64
SETTINGS = dict(population_size=6, mutation_size=8, crossover_size=6, seed=3)


def cost(gene):
    return encoder_macs(LENGTH, LAYERS, 32, 64, gene)


def score(gene):
    # saturating accuracy with some per-gene noise, so the front is not trivial
    noise = (hash(gene) % 1000) / 1e5
    return 100 * (1 - math.exp(-sum(gene) / (LAYERS * LENGTH * 0.3))) + noise


class Counting:
    def __init__(self):
        self.calls = []

    def __call__(self, gene):
        self.calls.append(gene)
        return score(gene)


def run(evo_iter, store=None, **kw):
    settings = SearchSettings(evo_iter=evo_iter, **{**SETTINGS, **kw})
    evaluator = Counting()
    result = evolutionary_search(evaluator, cost, LAYERS, LENGTH, settings, store=store,
                                 extra=lambda g: {"macs_max": cost(g)})
    return result, evaluator.calls


def test_pareto_front_is_the_set_of_non_dominated_records():
    rng = random.Random(0)
    records = [Record((i,), rng.choice([1.0, 2.0, 3.0, 4.0]), rng.random()) for i in range(40)]
    front = pareto_front(records)
    expected = [r for r in records if not any(
        (o.cost <= r.cost and o.score > r.score) or (o.cost < r.cost and o.score >= r.score)
        for o in records)]
    assert {r.gene for r in front} == {r.gene for r in expected}
    # equal cost: only the better one (the reference compared a cost with a length here)
    assert [r.gene for r in pareto_front([Record((9,), 5.0, 1.0), Record((1,), 5.0, 2.0)])] == [(1,)]


def test_mutation_and_crossover_keep_genes_monotone():
    rng = random.Random(0)
    for _ in range(300):
        parent = tuple(sorted((rng.randint(2, LENGTH) for _ in range(LAYERS)), reverse=True))
        child = mutate(parent, rng, 0.5, LENGTH)
        assert all(a >= b for a, b in zip(child, child[1:])) and LENGTH >= child[0] and child[-1] >= 2
        other = tuple(sorted((rng.randint(2, LENGTH) for _ in range(LAYERS)), reverse=True))
        mixed = crossover(parent, other)
        assert all(a >= b for a, b in zip(mixed, mixed[1:]))
        assert mixed == tuple((a + b + 1) // 2 for a, b in zip(parent, other))


def test_initial_population_uses_the_models_shape():
    genes = initial_genes(LAYERS, LENGTH, SearchSettings(population_size=5))
    assert genes[0] == (52, 42, 34, 28) and genes[1] == (LENGTH,) * LAYERS
    assert all(len(g) == LAYERS and max(g) <= LENGTH for g in genes)


def test_search_is_reproducible_and_counts_only_new_genes():
    a, calls_a = run(3)
    b, _ = run(3)
    assert a.store.to_json() == b.store.to_json() and a.front == b.front
    assert len(calls_a) == len(set(calls_a)) == len(a.store) == a.evaluated
    low, high = a.bounds
    assert all(low <= r.cost <= high for r in a.store.records.values())
    children = [r for r in a.store.records.values() if r.method != "init"]
    # every iteration adds up to mutation_size + crossover_size new genes
    assert 0 < len(children) <= 3 * (SETTINGS["mutation_size"] + SETTINGS["crossover_size"])
    c, _ = run(3, seed=4)
    assert c.store.to_json() != a.store.to_json()
    # the front improves on the initial population
    assert a.history[-1]["area"] >= a.history[0]["area"]


def test_a_tiny_search_space_terminates():
    settings = SearchSettings(evo_iter=3, population_size=2, mutation_size=50, crossover_size=50)
    result = evolutionary_search(lambda g: float(sum(g)), lambda g: float(sum(g)), 2, 4, settings)
    assert len(result.store) <= 10  # every monotone gene of 2 layers within 2..4


def test_resume_from_a_saved_store_replays_the_same_search(tmp_path):
    first, _ = run(1)
    save_search(str(tmp_path), first.store, first.front, first.history)
    store = Store.load(str(tmp_path / "store.json"))
    resumed, calls = run(3, store=store)
    fresh, _ = run(3)
    assert resumed.store.to_json() == fresh.store.to_json()
    assert [r.gene for r in resumed.front] == [r.gene for r in fresh.front]
    assert not set(calls) & set(first.store.records)  # stored genes are not evaluated again
    assert resumed.evaluated == len(fresh.store) - len(first.store)


def test_store_files(tmp_path):
    result, _ = run(1)
    paths = save_search(str(tmp_path), result.store, result.front)
    tsv = (tmp_path / "store.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["length_config", "gmacs", "gmacs_max", "score", "method", "parents"]
    assert len(tsv) == len(result.store) + 1
    front = json.loads((tmp_path / "pareto.json").read_text())["front"]
    assert [tuple(r["gene"]) for r in front] == [r.gene for r in result.front]
    assert set(paths) == {"store.tsv", "store.json", "pareto.tsv", "pareto.json"}
    assert len(Store.load(paths["store.json"], {"max_length": LENGTH})) == len(result.store)
    with pytest.raises(DataError, match="not a length-search store"):
        Store.load(str(tmp_path / "store.tsv"))
    (tmp_path / "m.json").write_text(json.dumps({"meta": {"max_length": 32}, "records": []}))
    with pytest.raises(ConfigError, match="max_length"):
        Store.load(str(tmp_path / "m.json"), {"max_length": LENGTH})


def test_best_under_a_budget():
    front = [Record((1,), 1.0, 80.0), Record((2,), 2.0, 88.0), Record((3,), 3.0, 90.0)]
    assert best_under(front, max_cost=2.5).gene == (2,)
    assert best_under(front, max_cost=0.5) is None
    assert best_under(front, max_drop=2.0, full_score=90.0).gene == (2,)
    assert best_under(front, max_drop=0.0, full_score=90.0).gene == (3,)


def test_settings_are_checked():
    for kw, flag in ((dict(mutation_size=-1), "--mutation-size"), (dict(mutation_prob=2), "--mutation-prob"),
                     (dict(length_drop_ratio_bound=1.0), "--length-drop-ratio-bound")):
        with pytest.raises(ConfigError, match=flag):
            SearchSettings(**kw).check()
