"""Evolutionary search of length configurations (Length-Adaptive Transformer, Kim & Cho 2021,
arXiv 2010.07003, Sec. 3.2; the reference's ``evolution.py`` and ``run_glue.py --do_search``).

Over any evaluator ``score(gene)`` (dev metric, higher is better) and cost ``cost(gene)``
(MACs, see :mod:`qbert.lat.macs`), with ``N`` layers and maximum length ``L``:

1. initial population: the smallest configuration (ratio ``b`` at every layer), the full one
   ``(L, ..., L)`` and ``population_size`` constant-ratio configurations whose mean kept
   fraction is evenly spaced between the smallest one's and 1; the costs of the smallest and
   full configurations bound the search;
2. every iteration: keep the Pareto frontier of the population on (cost, score), then add
   ``mutation_size`` mutants (a parent from the frontier, each layer redrawn with probability
   ``mutation_prob`` within ``[parent[i+1], child[i-1]]``, so genes stay non-increasing) and
   ``crossover_size`` crossovers (``(g0 + g1 + 1) // 2`` of two frontier genes).

Fixed against the reference: the frontier compares costs with costs (it compared a cost
with the gene's first length), only genuinely new genes within the cost bounds count as a
successful mutation/crossover (bounded number of attempts), and ``N``, ``L`` come from the
model. A store of evaluated genes makes a search resumable: the same seed replays the same
genes and only those missing from the store are evaluated.
"""
import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from qbert.errors import ConfigError, DataError

from .config import MIN_LENGTH, approx_ratio, inverse_approx_ratio, sample_length_config

logger = logging.getLogger(__name__)

Gene = Tuple[int, ...]
#: attempts allowed per requested mutation/crossover before the iteration gives up on them
ATTEMPTS_PER_CHILD = 50


@dataclass
class SearchSettings:
    population_size: int = 20
    evo_iter: int = 30
    mutation_size: int = 30
    mutation_prob: float = 0.5
    crossover_size: int = 30
    seed: int = 1
    length_drop_ratio_bound: float = 0.2
    min_length: int = MIN_LENGTH

    def check(self) -> "SearchSettings":
        for name in ("population_size", "evo_iter", "mutation_size", "crossover_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.mutation_prob <= 1:
            raise ConfigError(f"--mutation-prob must be in [0, 1], got {self.mutation_prob}")
        if not 0 < self.length_drop_ratio_bound < 1:
            raise ConfigError("--length-drop-ratio-bound must be in (0, 1), got "
                              f"{self.length_drop_ratio_bound}")
        return self


@dataclass
class Record:
    """One evaluated gene: ``cost`` in MACs, ``score`` the dev metric."""
    gene: Gene
    cost: float
    score: float
    method: str = "init"            # init | mutation | crossover
    parents: List[Gene] = field(default_factory=list)
    extra: Dict[str, float] = field(default_factory=dict)

    def to_json(self) -> Dict:
        d = asdict(self)
        d["gene"] = list(self.gene)
        d["parents"] = [list(p) for p in self.parents]
        return d

    @classmethod
    def from_json(cls, d: Dict) -> "Record":
        return cls(tuple(int(v) for v in d["gene"]), float(d["cost"]), float(d["score"]),
                   d.get("method", "init"), [tuple(p) for p in d.get("parents", [])],
                   dict(d.get("extra", {})))


class Store:
    """Evaluated genes (``gene -> Record``) and what they were evaluated for (``meta``)."""

    def __init__(self, meta: Optional[Dict] = None):
        self.meta = dict(meta or {})
        self.records: Dict[Gene, Record] = {}

    def __contains__(self, gene) -> bool:
        return tuple(gene) in self.records

    def __getitem__(self, gene) -> Record:
        return self.records[tuple(gene)]

    def __len__(self) -> int:
        return len(self.records)

    def add(self, record: Record) -> None:
        self.records[record.gene] = record

    def sorted(self) -> List[Record]:
        return sorted(self.records.values(), key=lambda r: (r.cost, -r.score, r.gene))

    def to_json(self) -> Dict:
        return {"meta": self.meta, "records": [r.to_json() for r in self.sorted()]}

    @classmethod
    def load(cls, path: str, meta: Optional[Dict] = None) -> "Store":
        """A saved store; with ``meta``, refuse one evaluated for another model/data/metric."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            store = cls(data.get("meta", {}))
            for d in data["records"]:
                store.add(Record.from_json(d))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a length-search store ({type(e).__name__}: {e})") from None
        for key, value in (meta or {}).items():
            if key in store.meta and store.meta[key] != value:
                raise ConfigError(f"{path}: the store was made with {key} = {store.meta[key]!r}, "
                                  f"this search has {value!r}; use another --out")
        store.meta.update(meta or {})
        return store


def pareto_front(records: Sequence[Record]) -> List[Record]:
    """The records no other record beats on both axes (lower cost, higher score), cheapest first."""
    front, best = [], -math.inf
    for r in sorted(records, key=lambda r: (r.cost, -r.score, r.gene)):
        if r.score > best:
            front.append(r)
            best = r.score
    return front


def front_area(front: Sequence[Record], low: float, high: float) -> float:
    """The reference's progress measure: area under the front's step curve, per unit cost."""
    area = sum((b.cost - a.cost) * a.score for a, b in zip(front[:-1], front[1:]))
    return area / (high - low) if high > low else 0.0


def mutate(parent: Gene, rng: random.Random, prob: float, max_length: int,
           min_length: int = MIN_LENGTH) -> Gene:
    """Each layer redrawn with probability ``prob`` in ``[parent[i+1], child[i-1]]``."""
    n, child = len(parent), []
    for i in range(n):
        if rng.random() < prob:
            high = max_length if i == 0 else child[i - 1]
            low = min(min_length if i == n - 1 else parent[i + 1], high)
            child.append(rng.randint(low, high))
        else:
            child.append(parent[i])
    return tuple(child)


def crossover(gene0: Gene, gene1: Gene) -> Gene:
    return tuple((a + b + 1) // 2 for a, b in zip(gene0, gene1))


def initial_genes(num_layers: int, max_length: int, settings: SearchSettings) -> List[Gene]:
    """The smallest and full configurations, then the constant-ratio ones."""
    b, kw = settings.length_drop_ratio_bound, dict(min_length=settings.min_length)
    genes = [sample_length_config(max_length, num_layers, ratio=b, **kw),
             (max_length,) * num_layers]
    lowest = approx_ratio(b, num_layers, max_length)
    n = settings.population_size
    for k in range(1, n + 1):
        target = lowest + (1 - lowest) * k / (n + 1)
        ratio = inverse_approx_ratio(target, num_layers, max_length)
        genes.append(sample_length_config(max_length, num_layers, ratio=ratio, **kw))
    return genes


@dataclass
class SearchResult:
    store: Store
    front: List[Record]
    history: List[Dict]
    evaluated: int          # genes evaluated by this call (the others came from the store)
    bounds: Tuple[float, float]


def evolutionary_search(score: Callable[[Gene], float], cost: Callable[[Gene], float],
                        num_layers: int, max_length: int, settings: SearchSettings,
                        store: Optional[Store] = None,
                        extra: Optional[Callable[[Gene], Dict[str, float]]] = None,
                        on_iteration: Optional[Callable[[int, Store, List[Record]], None]] = None,
                        ) -> SearchResult:
    """Run the search (see module docstring); ``store`` is filled in place and reused."""
    settings.check()
    store = store if store is not None else Store()
    rng = random.Random(settings.seed)
    seen, population = set(), []
    counter = {"evaluated": 0}
    genes = initial_genes(num_layers, max_length, settings)
    low, high = cost(genes[0]), cost(genes[1])

    def add(gene: Gene, method: str, parents=()) -> bool:
        if gene in seen:
            return False
        seen.add(gene)
        c = cost(gene)
        if c < low or c > high:
            return False
        if gene not in store:
            store.add(Record(gene, c, float(score(gene)), method, list(parents),
                             dict(extra(gene)) if extra else {}))
            counter["evaluated"] += 1
        population.append(gene)
        return True

    for gene in genes:
        add(gene, "init")

    def produce(n: int, make) -> None:
        made = attempts = 0
        while made < n and attempts < ATTEMPTS_PER_CHILD * n:
            attempts += 1
            made += bool(make())
        if made < n:
            logger.info(f"only {made} of {n} new genes found in {attempts} attempts")

    def one_mutation() -> bool:
        parent = rng.choice(population)
        return add(mutate(parent, rng, settings.mutation_prob, max_length, settings.min_length),
                   "mutation", [parent])

    def one_crossover() -> bool:
        g0, g1 = rng.sample(population, 2)
        return add(crossover(g0, g1), "crossover", [g0, g1])

    history = []
    for it in range(settings.evo_iter + 1):
        front = pareto_front([store[g] for g in population])
        population = [r.gene for r in front]
        history.append({"iteration": it, "front": [list(r.gene) for r in front],
                        "area": front_area(front, low, high), "store_size": len(store)})
        logger.info(f"iteration {it}: front of {len(front)}, area {history[-1]['area']:.4f}, "
                    f"{len(store)} genes evaluated in all")
        if on_iteration is not None:
            on_iteration(it, store, front)
        if it == settings.evo_iter:
            break
        produce(settings.mutation_size, one_mutation)
        if len(population) >= 2:
            produce(settings.crossover_size, one_crossover)
    return SearchResult(store, front, history, counter["evaluated"], (low, high))


def best_under(front: Sequence[Record], max_cost: Optional[float] = None,
               max_drop: Optional[float] = None, full_score: Optional[float] = None) -> Optional[Record]:
    """The best record of ``front`` under a cost budget (highest score with cost <=
    ``max_cost``) or an accuracy budget (cheapest with score >= ``full_score - max_drop``)."""
    if max_cost is not None:
        fit = [r for r in front if r.cost <= max_cost]
        return max(fit, key=lambda r: (r.score, -r.cost)) if fit else None
    if max_drop is not None:
        fit = [r for r in front if r.score >= full_score - max_drop]
        return min(fit, key=lambda r: (r.cost, -r.score)) if fit else None
    return None


# ---------------------------------------------------------------------------- files
def write_atomic(path: str, content) -> str:
    """Write ``content`` (text, or an object written as indented JSON) via a renamed temp file."""
    text = content if isinstance(content, str) else json.dumps(content, indent=1) + "\n"
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def records_tsv(records: Sequence[Record]) -> str:
    """gene, GMACs, extra columns (``*macs*`` in GMACs), score, method, parents."""
    extras = sorted({k for r in records for k in r.extra})
    lines = ["\t".join(["length_config", "gmacs", *[k.replace("macs", "gmacs") for k in extras],
                        "score", "method", "parents"])]
    for r in records:
        cells = ["(" + ",".join(map(str, r.gene)) + ")", f"{r.cost / 1e9:.6f}"]
        cells += ["" if k not in r.extra else f"{r.extra[k] / 1e9:.6f}" if "macs" in k
                  else f"{r.extra[k]:.6g}" for k in extras]
        cells += [f"{r.score:.6f}", r.method,
                  " ".join("(" + ",".join(map(str, p)) + ")" for p in r.parents)]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def save_search(out_dir: str, store: Store, front: Sequence[Record],
                history: Optional[List[Dict]] = None) -> Dict[str, str]:
    """``store.tsv``/``store.json`` (every evaluated gene) and ``pareto.tsv``/``pareto.json``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in
             ("store.tsv", "store.json", "pareto.tsv", "pareto.json")}
    write_atomic(paths["store.tsv"], records_tsv(store.sorted()))
    write_atomic(paths["store.json"], store.to_json())
    write_atomic(paths["pareto.tsv"], records_tsv(front))
    write_atomic(paths["pareto.json"], {"meta": store.meta, "front": [r.to_json() for r in front],
                                        "history": history or []})
    return paths
