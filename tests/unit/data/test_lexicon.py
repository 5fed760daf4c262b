"""The latent lexicon (qbert.data.lexicon): aliases are synonyms that only dev/test and the
pretraining corpus use; rewriting never changes a label or a function word."""
import random
import subprocess
import sys

import pytest
from conftest import ALL_TASKS, REPO_DIR

from qbert.data import lexicon as lx
from qbert.data import mini_corpus, mini_glue
from qbert.data.glue_tasks import get_task

ROWS = 300


@pytest.fixture(scope="module")
def lexicon():
    return mini_glue.world_lexicon(4, 0.5, seed=1)


def test_world_vocabulary_covers_every_generated_word():
    vocab = set(mini_glue.world_vocabulary())
    for task in ALL_TASKS:
        spec = get_task(task)
        for split in spec.splits:
            for row in mini_glue._split_rows(spec.name, split, ROWS, 1):
                for col in spec.columns(split):
                    missing = set(lx.content_words(row[col - 1])) - vocab
                    assert not missing, (task, split, missing)


def test_alias_table_is_deterministic_unique_and_keeps_a_an(lexicon):
    again = mini_glue.world_lexicon(4, 0.5, seed=1)
    assert again.table() == lexicon.table()
    assert mini_glue.world_lexicon(4, 0.5, seed=2).table() != lexicon.table()
    vocab = set(mini_glue.world_vocabulary())
    seen = set()
    for word, aliases in lexicon.table().items():
        assert len(aliases) == 4 and lx.is_content_word(word)
        for a in aliases:
            assert a not in vocab and a not in lx.FUNCTION_WORDS and a not in seen
            assert (a[0] in "aeiou") == (word[0] in "aeiou")  # "a" / "an" stay right
            assert lexicon.base_of(a) == word
            seen.add(a)
    assert not any(lx.is_content_word(w) and w not in lexicon.table() for w in vocab)


def test_rewrite_replaces_content_words_at_the_given_rate_and_nothing_else(lexicon):
    rng = random.Random(0)
    text = "the teacher was not happy , but anna bought a red car in paris ."
    replaced = kept = 0
    for _ in range(400):
        out = lexicon.rewrite(text, rng).split()
        assert len(out) == len(text.split())
        for src, dst in zip(text.split(), out):
            if lx.is_content_word(src):
                assert dst == src or dst in lexicon.aliases(src)
                replaced += dst != src
                kept += dst == src
            else:
                assert dst == src
    assert abs(replaced / (replaced + kept) - 0.5) < 0.03
    with pytest.raises(KeyError, match="zzzz"):
        lexicon.aliases("zzzz")


@pytest.mark.parametrize("task", ALL_TASKS)
def test_dev_and_test_use_aliases_train_does_not_and_labels_are_unchanged(lexicon, task):
    spec = get_task(task)
    for split in spec.splits:
        plain = mini_glue._split_rows(spec.name, split, ROWS, 1)
        aliased = mini_glue._split_rows(spec.name, split, ROWS, 1, lexicon)
        if split == spec.train_split:
            assert aliased == plain
            continue
        text_cols = set(spec.columns(split))
        n_alias = 0
        for p, a in zip(plain, aliased):
            for i, (pc, ac) in enumerate(zip(p, a)):
                if i + 1 in text_cols:
                    back = " ".join(lexicon.base_of(t) for t in ac.split(" "))
                    assert back == pc  # a synonym for every replaced word, nothing else changed
                    n_alias += sum(t != u for t, u in zip(ac.split(), pc.split()))
                elif task == "MNLI" and i in (4, 5, 6, 7):  # parses follow their sentence
                    sent = a[8 + (i % 2)]
                    assert ac == (mini_glue._binary_parse(sent) if i < 6 else mini_glue._parse(sent))
                else:
                    assert ac == pc  # labels, ids, genres
        assert n_alias > ROWS / 2, (task, split)


def test_corpus_uses_the_aliases_of_the_same_lexicon(tmp_path, lexicon):
    plain = list(mini_corpus.task_sentences("SST-2", 200, 1, "pretrain-train"))
    aliased = list(mini_corpus.task_sentences("SST-2", 200, 1, "pretrain-train", lexicon))
    assert len(plain) == len(aliased) and plain != aliased
    assert [" ".join(lexicon.base_of(t) for t in s.split(" ")) for s in aliased] == plain
    a = mini_corpus.write_corpus(str(tmp_path / "a"), "SST-2,RTE", 40, 5, seed=1, aliases=4)
    b = mini_corpus.write_corpus(str(tmp_path / "b"), "SST-2,RTE", 40, 5, seed=1, aliases=4)
    assert [open(p).read() for p in a] == [open(p).read() for p in b]
    words = set(open(a[0]).read().split())
    assert any(lexicon.base_of(w) != w for w in words)


def test_cli_lexicon_flags(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "qbert.data.mini_glue", "--out-dir", str(tmp_path / "g"),
                               "--tasks", "SST-2", "--train-size", "20", "--dev-size", "20", "--test-size", "5",
                               *args], cwd=REPO_DIR, capture_output=True, text=True)
    for bad, flag in ((["--aliases", "-1"], "--aliases"), (["--alias-prob", "0"], "--alias-prob"),
                      (["--alias-prob", "x"], "--alias-prob")):
        proc = run("--aliases", "4", *bad)
        assert proc.returncode == 2 and flag in proc.stderr
        assert not (tmp_path / "g").exists()
    assert run("--aliases", "3", "--alias-prob", "1").returncode == 0
    lexicon = mini_glue.world_lexicon(3, 1.0, seed=1)
    def words(split):
        lines = open(tmp_path / "g" / "SST-2" / f"{split}.tsv").read().splitlines()[1:]
        return [w for line in lines for w in line.split("\t")[0].split()]
    assert all(lexicon.base_of(w) == w for w in words("train"))
    assert all(lexicon.base_of(w) != w for w in words("dev") if lx.is_content_word(w))  # prob 1


def test_corpus_glosses_state_every_alias_meaning(tmp_path):
    lexicon = mini_glue.world_lexicon(2, 0.5, seed=1)
    train, valid = mini_corpus.write_corpus(str(tmp_path / "c"), "SST-2", 50, 5, seed=1, aliases=2, glosses=3)
    templates = [t.split() for t in lx.GLOSS_TEMPLATES]

    def gloss_pairs(path):
        pairs = []
        for line in open(path).read().splitlines():
            toks = line.split()
            for t in templates:
                if len(t) == len(toks) and all(a == b or a in ("{alias}", "{word}") for a, b in zip(t, toks)):
                    slot = [b for a, b in zip(t, toks) if a in ("{alias}", "{word}")]
                    pairs.append(tuple(sorted(slot)))
                    break
        return pairs

    pairs = gloss_pairs(train)
    every_alias = [tuple(sorted((a, w))) for w, aliases in lexicon.table().items() for a in aliases]
    assert sorted(pairs) == sorted(every_alias * 3)  # each alias glossed 3 times, correctly
    assert sorted(gloss_pairs(valid)) == sorted(every_alias)
    assert mini_corpus.write_corpus(str(tmp_path / "d"), "SST-2", 50, 5, seed=1, aliases=2, glosses=3)
    assert open(train).read() == open(tmp_path / "d" / "train.txt").read()
    plain, _ = mini_corpus.write_corpus(str(tmp_path / "e"), "SST-2", 50, 5, seed=1, aliases=2, glosses=0)
    assert not gloss_pairs(plain)


def test_lexicon_probe_finds_aliases_placed_next_to_their_base_word():
    import importlib.util

    import torch
    spec = importlib.util.spec_from_file_location("lexicon_probe", f"{REPO_DIR}/scripts/lexicon_probe.py")
    probe_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe_mod)
    lexicon = mini_glue.world_lexicon(2, 0.5, seed=1)
    tokens = [t for w, a in lexicon.table().items() for t in (w, *a)]
    ids = {t: i for i, t in enumerate(tokens)}
    g = torch.Generator().manual_seed(0)
    base = {w: torch.randn(64, generator=g) for w in lexicon.table()}
    learned = torch.stack([base[lexicon.base_of(t)] + 0.1 * torch.randn(64, generator=g) for t in tokens])
    same, other, acc, n = probe_mod.probe(learned, ids.get, lexicon)
    assert acc == 1.0 and n == 2 * len(base) and same > 0.9 > other
    _, _, acc_random, _ = probe_mod.probe(torch.randn(len(tokens), 64, generator=g), ids.get, lexicon)
    assert acc_random < 0.05


def test_aliases_in_train_rewrites_train_with_the_same_labels(tmp_path):
    lexicon = mini_glue.world_lexicon(8, 0.5, seed=1)
    plain = mini_glue.write_task(str(tmp_path / "p"), "RTE", 60, 10, 5, seed=1)
    both = mini_glue.write_task(str(tmp_path / "a"), "RTE", 60, 10, 5, seed=1, lexicon=lexicon,
                                aliases_in_train=True)
    dev_only = mini_glue.write_task(str(tmp_path / "d"), "RTE", 60, 10, 5, seed=1, lexicon=lexicon)
    read = lambda path: [line.split("\t") for line in open(path).read().splitlines()]  # noqa: E731
    p_train, a_train, d_train = (read(x[0]) for x in (plain, both, dev_only))
    assert d_train == p_train and a_train != p_train
    for p, a in zip(p_train, a_train):
        assert [p[0], p[3]] == [a[0], a[3]]  # index and label
        assert [" ".join(lexicon.base_of(t) for t in a[c].split(" ")) for c in (1, 2)] == [p[1], p[2]]
    assert read(both[1]) == read(dev_only[1])  # dev is the same either way
