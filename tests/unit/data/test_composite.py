"""Composite mini-GLUE (qbert.data.composite): the GLUE layout of the single-unit tasks,
determinism, labels that aggregate their units' labels (checked from the text where the
rule is readable from it), no label noise, the other tasks unchanged."""
import collections
import filecmp
import os
import random
import subprocess
import sys

import pytest
from conftest import REPO_DIR, read_tsv

from qbert.data import composite
from qbert.data import mini_glue as world

SIZES = dict(train_size=400, dev_size=60, test_size=20)
# task -> (label column of train/dev, text columns of train/dev), as in the GLUE files
LAYOUT = {"SST-2": (1, [0]), "CoLA": (1, [3]), "RTE": (3, [1, 2]), "MRPC": (0, [3, 4])}
NEGATED = [negated for _, negated in world.SST_NEGATORS]


def _data(folder, task, split):
    rows = read_tsv(os.path.join(folder, task, f"{split}.tsv"))
    return rows if task == "CoLA" and split != "test" else rows[1:]


@pytest.fixture(scope="module")
def glues(tmp_path_factory):
    root = tmp_path_factory.mktemp("composite")
    plain, comp = root / "plain", root / "composite"
    world.generate(str(plain), "all", seed=3, **SIZES)
    world.generate(str(comp), "all", seed=3, composite=True, **SIZES)
    return plain, comp


def test_the_four_tasks_and_their_layout(glues):
    plain, comp = glues
    assert world.composite_tasks() == ("SST-2", "CoLA", "RTE", "MRPC")
    for task in world.TASK_NAMES:
        for split in sorted(os.listdir(plain / task)):
            a, b = read_tsv(plain / task / split), read_tsv(comp / task / split)
            if task not in composite.GENERATORS:   # unchanged, byte for byte
                assert filecmp.cmp(plain / task / split, comp / task / split, shallow=False), (task, split)
                continue
            assert len(a) == len(b), (task, split)
            if task != "CoLA":   # CoLA train/dev have no header
                assert a[0] == b[0], (task, split)
            assert {len(r) for r in a} == {len(r) for r in b}, (task, split)
            assert a != b


def test_deterministic_in_a_fresh_process(glues, tmp_path):
    _, comp = glues
    env = dict(os.environ, PYTHONHASHSEED="321")
    subprocess.run([sys.executable, "-m", "qbert.data.mini_glue", "--out-dir", str(tmp_path), "--composite",
                    "--tasks", "SST-2,CoLA,RTE,MRPC", "--seed", "3", "--train-size", "400", "--dev-size", "60",
                    "--test-size", "20"], check=True, cwd=REPO_DIR, env=env, capture_output=True)
    for task in composite.GENERATORS:
        for split in os.listdir(comp / task):
            assert filecmp.cmp(comp / task / split, tmp_path / task / split, shallow=False), (task, split)


def _clause_polarity(clause):
    """SST-2 clause polarity read from its words: adjective class, flipped by a negated verb."""
    words = clause.split()
    positive = words[-1] in world.SST_POS
    assert positive or words[-1] in world.SST_NEG, clause
    negated = any(f" {n} " in f" {clause} " for n in NEGATED)
    return int(positive) ^ int(negated)


def test_sst2_label_is_the_majority_of_its_clauses_read_from_the_text(glues):
    _, comp = glues
    sizes = collections.Counter()
    for split in ("train", "dev"):
        for text, label in _data(comp, "SST-2", split):
            clauses = text.strip()[:-2].split(" ; ")
            sizes[len(clauses)] += 1
            polarities = [_clause_polarity(c) for c in clauses]
            assert int(label) == int(2 * sum(polarities) > len(clauses)), text
    assert set(sizes) == set(composite.SST_CLAUSES)


def test_mrpc_paraphrases_keep_every_number_name_and_period(glues):
    """A paraphrase reports the same facts: the same companies, numbers and months, in the
    same fact order; a non-paraphrase changes one fact."""
    _, comp = glues
    keep = set(world.COMPANIES) | set(world.NUMBERS) | set(world.MRPC_PERIODS)
    differs = collections.Counter()
    for row in _data(comp, "MRPC", "train"):
        facts1, facts2 = row[3][:-2].split(" ; "), row[4][:-2].split(" ; ")
        assert len(facts1) == len(facts2) and len(facts1) in composite.UNITS
        changed = [sorted(w for w in a.split() if w in keep) != sorted(w for w in b.split() if w in keep)
                   for a, b in zip(facts1, facts2)]
        if row[0] == "1":
            assert not any(changed), row
        else:
            assert sum(changed) <= 1, row
            differs[any(changed)] += 1
    assert differs[True] > differs[False]   # most changes show in names/numbers; the rest in words


@pytest.mark.parametrize("task", sorted(composite.GENERATORS))
def test_label_aggregates_the_unit_labels_without_noise(task):
    """Every row's label is the rule applied to its units (majority for SST-2 and RTE, all
    for the others), with no flipped label; unit counts and class balance are as documented."""
    trace = []
    rows = composite.GENERATORS[task](random.Random(f"t:{task}"), 3000, "train", trace)
    label_col = LAYOUT[task][0]
    positive = {"RTE": "entailment"}.get(task, "1")
    balance = []
    for row, units in zip(rows, trace):
        k = len(units)
        if task == "SST-2":
            assert k in composite.SST_CLAUSES and int(row[label_col]) == int(2 * sum(units) > k)
        elif task == "RTE":
            assert k in composite.RTE_SOURCES_PER_EXAMPLE and (row[label_col] == positive) == (2 * sum(units) > k)
            assert row[1].count(" said ") == k   # one report per source
        else:
            assert k in composite.UNITS and (row[label_col] == positive) == all(units)
            assert sum(units) >= k - 1, "at most one unit is changed"
        balance.append(row[label_col] == positive)
    share = sum(balance) / len(balance)
    expected = {"SST-2": 0.5, "CoLA": 0.7, "RTE": 0.5, "MRPC": 0.6}[task]   # RTE: k odd, p 0.5
    assert abs(share - expected) < 0.05, share


def test_test_split_has_no_labels_and_the_cli_documents_the_flag(glues, tmp_path):
    _, comp = glues
    assert read_tsv(comp / "SST-2" / "test.tsv")[0] == ["index", "sentence"]
    out = subprocess.run([sys.executable, "-m", "qbert.data.mini_glue", "--help"], cwd=REPO_DIR,
                         capture_output=True, text=True).stdout
    assert "--composite" in out


def test_a_contradicting_report_changes_one_thing_and_never_a_negated_events_detail():
    """Multi-source RTE: a contradicting source differs from the event in exactly one field;
    a negated event ("did not buy the red car") is only contradicted by dropping the negation
    (another colour would not contradict it)."""
    rng = random.Random(5)
    fields = collections.Counter()
    for _ in range(3000):
        event = world._event(rng)
        told = composite._contradicting(rng, event)
        changed = [k for k in event if event[k] != told[k]]
        if set(changed) == {"subj", "obj"}:
            changed = ["swap"]
        assert len(changed) == 1, (event, told)
        if event["neg"]:
            assert changed == ["neg"], (event, told)
        fields[changed[0]] += 1
    assert set(fields) == {"neg", "swap", "verb", "color", "place", "day"}
