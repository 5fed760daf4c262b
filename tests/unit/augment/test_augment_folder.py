"""qbert-augment on binarized folders: determinism, layout and labels, candidates from the
masked LM's top K (checked against the model's own logits), the multi-piece path, errors."""
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aug_fixtures as F  # noqa: E402
import kd_fixtures as K  # noqa: E402
from scratch import subprocess_env  # noqa: E402

from fairseq_qbert.augment import mlm  # noqa: E402
from fairseq_qbert.augment.cli import augment_folder  # noqa: E402
from qbert.augment import core, layout  # noqa: E402
from qbert.errors import CheckpointError, ConfigError  # noqa: E402

N, TOP_K, P = 5, 4, 0.5


def _rows(folder, field, split="train"):
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(folder, field, "dict.txt"))
    ds = data_utils.load_indexed_dataset(os.path.join(folder, field, split), d)
    return [ds[i].tolist() for i in range(len(ds))]


def _dictionary(folder):
    from fairseq.data import Dictionary

    d = Dictionary.load(os.path.join(folder, "input0", "dict.txt"))
    d.add_symbol("<mask>")
    return d


@pytest.fixture(scope="module")
def augmented(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    out = {}
    for kind in ("cls", "reg_pairs"):
        data = F.aug_data(kind)
        model = F.masked_lm(data)
        out[kind] = (data, model, augment_folder(data, model, str(root / f"{kind}-a"), n_aug=N,
                                                 top_k=TOP_K, replace_prob=P, seed=1))
    return root, out


def _same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    for name in cmp.common_files:
        if name == "augment.json":
            continue
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    assert not cmp.left_only and not cmp.right_only
    for sub in cmp.common_dirs:
        _same_tree(os.path.join(a, sub), os.path.join(b, sub))


def test_deterministic_for_a_seed(augmented):
    root, out = augmented
    data, model, first = out["cls"]
    again = augment_folder(data, model, str(root / "cls-b"), n_aug=N, top_k=TOP_K,
                           replace_prob=P, seed=1, batch_size=3)  # other batching, same result
    _same_tree(first, again)
    other = augment_folder(data, model, str(root / "cls-c"), n_aug=N, top_k=TOP_K,
                           replace_prob=P, seed=2)
    assert _rows(first, "input0") != _rows(other, "input0")


@pytest.mark.parametrize("kind", ["cls", "reg_pairs"])
def test_originals_first_flags_sources_and_labels(augmented, kind):
    data, _, aug = augmented[1][kind]
    fields = ["input0"] + (["input1"] if kind == "reg_pairs" else [])
    src = {f: _rows(data, f) for f in fields}
    new = {f: _rows(aug, f) for f in fields}
    n = len(src["input0"])
    total = len(new["input0"])
    assert n < total <= n * (1 + N * len(fields))
    flags = layout.load_original_flags(aug, "train", total)
    source = layout.load_source_rows(aug, "train", total)
    assert flags.tolist() == [True] * n + [False] * (total - n)
    assert source[:n].tolist() == list(range(n)) and np.all(np.diff(source[n:]) >= 0)
    for f in fields:
        assert new[f][:n] == src[f]
    # every augmented row differs from its source row in exactly one field (TinyBERT augments
    # each text column separately), and no row is repeated
    for i in range(n, total):
        changed = [f for f in fields if new[f][i] != src[f][source[i]]]
        assert len(changed) == 1, (i, changed)
    assert len({tuple(tuple(new[f][i]) for f in fields) for i in range(total)}) == total
    # labels: copied from the source row
    if kind == "cls":
        src_labels, new_labels = _rows(data, "label"), _rows(aug, "label")
    else:
        src_labels = Path(data, "label", "train.label").read_text().splitlines()
        new_labels = Path(aug, "label", "train.label").read_text().splitlines()
    assert new_labels == [src_labels[s] for s in source]
    # valid copied unchanged, dictionaries copied
    for f in [*fields, "label"]:
        for name in os.listdir(os.path.join(data, f)):
            if not name.startswith("train."):
                assert filecmp.cmp(os.path.join(data, f, name), os.path.join(aug, f, name), shallow=False)
    meta = layout.read_meta(aug)
    assert (meta.n_aug, meta.top_k, meta.replace_prob, meta.seed) == (N, TOP_K, P, 1)
    assert meta.splits == {"train": {"rows": total, "original_rows": n, "source_split": "train",
                                     "n_aug": N, "top_k": TOP_K, "replace_prob": P, "seed": 1}}


@pytest.mark.parametrize("mode,candidates", [("with-original", "content"), ("masked", "tinybert")])
def test_replacements_are_in_the_masked_lms_top_k(augmented, mode, candidates, tmp_path):
    data, model_path, aug = augmented[1]["cls"]
    if mode != "with-original":
        aug = augment_folder(data, model_path, str(tmp_path / "m"), n_aug=N, top_k=TOP_K,
                             replace_prob=P, seed=1, mlm_input=mode, candidates=candidates)
    d = _dictionary(data)
    model = mlm.load_masked_lm(model_path, d)
    src, new = _rows(data, "input0"), _rows(aug, "input0")
    source = layout.load_source_rows(aug, "train", len(new))
    specials = {d.bos(), d.pad(), d.eos(), d.unk(), d.index("<mask>")}
    checked = 0
    for i in range(len(src), len(new), 2):  # every other augmented row (time)
        orig, var = src[source[i]], new[i]
        assert len(orig) == len(var)  # whitespace tokens: one token per word
        for pos in [j for j, (a, b) in enumerate(zip(orig, var)) if a != b]:
            assert core.is_replaceable(d[orig[pos]])  # never a stop word or punctuation
            body = orig[:-1]
            masked = list(body)
            masked[pos] = d.index("<mask>")
            tokens = [d.bos(), *masked, d.eos()] + ([*body, d.eos()] if mode == "with-original" else [])
            with torch.no_grad():
                x, _ = model(torch.tensor([tokens]), features_only=False)
            logits = x[0, 1 + pos]
            top = torch.topk(logits, TOP_K).indices.tolist()
            assert var[pos] in top and var[pos] not in specials, (i, pos)
            if candidates == "content":  # the default: only words TinyBERT would replace
                assert core.is_replaceable(d[var[pos]]), d[var[pos]]
            checked += 1
    assert checked > 15


def test_content_candidates_are_tinyberts_top_k_minus_other_words():
    """--candidates content keeps the same top K and drops what TinyBERT would not replace."""
    data = F.aug_data("cls")
    d = _dictionary(data)
    model = mlm.load_masked_lm(F.masked_lm(data), d)
    sentences = [torch.tensor(r) for r in _rows(data, "input0")]
    vocab = mlm.whitespace_vocab(d)
    k = 12  # of 30 tokens: the stop words and '.' are among some top 12
    wide = mlm.plan_sentences(model, sentences, d, vocab, k)
    narrow = mlm.plan_sentences(model, sentences, d, vocab.content_words_only(), k)
    dropped = 0
    for a, b in zip(wide, narrow):
        assert a.words == b.words and sorted(a.candidates) == sorted(b.candidates)
        for w, cands in a.candidates.items():
            kept = [c for c in cands if core.is_replaceable(d[c[0]])]
            assert b.candidates[w] == (kept or [a.words[w]])
            dropped += len(cands) - len(kept)
    assert dropped > 0  # the random masked LM proposes stop words and punctuation too


def test_multi_piece_words_get_embedding_neighbours():
    data = F.aug_data("cls")
    d = _dictionary(data)
    model = mlm.load_masked_lm(F.masked_lm(data), d)
    vocab = mlm.whitespace_vocab(d)
    river, stone, apple = d.index("river"), d.index("stone"), d.index("apple")
    vocab.word_start[stone] = False  # pretend "river stone" is one word of two pieces
    plan = mlm.plan_sentences(model, [torch.tensor([apple, river, stone, d.eos()])], d, vocab, 3)[0]
    assert plan.words == [(apple,), (river, stone)]
    emb = model.encoder.sentence_encoder.embed_tokens.weight
    expected = core.nearest_neighbours(emb, emb[[river, stone]].mean(0), 3, vocab.allowed_inner)
    assert plan.candidates[1] == [(c,) for c in expected] and len(expected) == 3


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fairseq_qbert.augment.cli", *map(str, args)],
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)


def _nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(out.name + ".tmp")]


def _refused(out, needle, *args):
    """In-process cli_main: a UsageError (SystemExit, status 1) with one line naming ``needle``."""
    from fairseq_qbert.augment.cli import cli_main

    with pytest.raises(SystemExit) as e:
        cli_main([*map(str, args), "--out", str(out)])
    assert e.value.code == f"fairseq-qbert: error: {e.value.message}"
    assert needle in e.value.message and "\n" not in e.value.message
    _nothing_written(out)


def test_cli_error_is_one_line_and_exit_status_1(tmp_path):
    data = F.aug_data("cls")
    out = tmp_path / "out"
    proc = _cli("--data", data, "--pretrained", F.masked_lm(data), "--out", out, "--n-aug", 0)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("fairseq-qbert: error: --n-aug")
    assert "Traceback" not in proc.stderr
    _nothing_written(out)


def test_errors_write_nothing(tmp_path):
    data = F.aug_data("cls")
    model = F.masked_lm(data)
    out = tmp_path / "out"
    base = ["--data", data]
    _refused(out, "--n-aug", *base, "--pretrained", model, "--n-aug", 0)
    _refused(out, "--top-k", *base, "--pretrained", model, "--top-k", 0)
    # a fine-tuned sentence classifier is no masked LM
    teacher = K.make_teacher("aug_cls_teacher", K.ROBERTA_TINY, "cls", data=data)
    _refused(out, "not a pretrained masked LM", *base, "--pretrained", teacher)
    # a masked LM of another dictionary: vocabulary size, then same size but other entries
    other = F.masked_lm(F.aug_data("reg_pairs"), name="mlm_pairs")
    _refused(out, "dictionary mismatch", *base, "--pretrained", other)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model.pt").write_bytes(Path(model).read_bytes())
    lines = Path(model).with_name("dict.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (fake / "dict.txt").write_text("\n".join(lines) + "\n")
    _refused(out, "dictionary mismatch with", *base, "--pretrained", fake / "model.pt")
    # a failure half-way (here: the label file is short) leaves no temporary folder behind
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(data, broken)
    (broken / "label" / "train.idx").unlink()
    _refused(out, "no label/train.bin/.idx", "--data", broken, "--pretrained", model)
    from fairseq_qbert.augment.cli import cli_main

    assert cli_main([*base, "--pretrained", model, "--n-aug", "2", "--top-k", "3", "--out", str(out)]) == 0
    assert (out / "augment" / "train.original.npy").is_file()
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(SystemExit, match="exists"):
        cli_main([*base, "--pretrained", model, "--out", str(out)])
    assert sorted(p.name for p in out.rglob("*")) == before


def test_library_errors():
    data = F.aug_data("cls")
    with pytest.raises(ConfigError, match="--replace-prob"):
        augment_folder(data, F.masked_lm(data), "/nonexistent/x", replace_prob=-0.1)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        mlm.load_masked_lm("/nonexistent/model.pt", _dictionary(data))


def test_gpt2_words_and_candidates(tmp_path):
    """--bpe gpt2: a 'Ġ' piece starts a word; sentence-initial words are replaced by tokens
    without it, later ones by 'Ġ' tokens; a multi-piece word gets embedding neighbours."""
    import json

    pieces = ["Ġriver", "ston", "e", "Ġthe", "apple", "Ġstone", "Ġgreen", "green", "Ġ.", "Ġ123"]
    encoder = {p: 1000 + i for i, p in enumerate(pieces)}
    (tmp_path / "encoder.json").write_text(json.dumps(encoder))
    data = tmp_path / "bin"
    (data / "input0").mkdir(parents=True)
    (data / "input0" / "dict.txt").write_text("".join(f"{1000 + i} 1\n" for i in range(len(pieces))))
    d = _dictionary(str(data))
    vocab = mlm.gpt2_vocab(d, str(tmp_path / "encoder.json"))
    idx = {p: d.index(str(encoder[p])) for p in pieces}
    assert [bool(vocab.word_start[idx[p]]) for p in ("Ġriver", "ston", "e", "apple")] == [True, False, False, False]
    assert {p for p in pieces if vocab.allowed_inner[idx[p]]} == {"Ġriver", "Ġthe", "Ġstone", "Ġgreen"}
    assert {p for p in pieces if vocab.allowed_first[idx[p]]} == {"ston", "e", "apple", "green"}
    assert not vocab.allowed_inner[d.index("<mask>")] and not vocab.allowed_first[d.bos()]
    model = mlm.load_masked_lm(F.masked_lm(str(data), name="mlm_gpt2"), d)
    sentence = torch.tensor([idx["apple"], idx["Ġriver"], idx["ston"], idx["e"], idx["Ġthe"], d.eos()])
    plan = mlm.plan_sentences(model, [sentence], d, vocab, 3)[0]
    assert plan.words == [(idx["apple"],), (idx["Ġriver"], idx["ston"], idx["e"]), (idx["Ġthe"],)]
    assert vocab.text(plan.words[1]) == "riverstone"
    assert sorted(plan.candidates) == [0, 1]  # "the" is a stop word
    assert all(vocab.allowed_first[c] for (c,) in plan.candidates[0])
    emb = model.encoder.sentence_encoder.embed_tokens.weight
    expected = core.nearest_neighbours(emb, emb[list(plan.words[1])].mean(0), 3, vocab.allowed_inner)
    assert plan.candidates[1] == [(c,) for c in expected]


def test_out_split_adds_the_augmented_rows_to_the_data_folder(augmented, tmp_path):
    """--out-split NAME: the same rows as --out's train split, written into DATA-bin as split
    NAME (fairseq-train --train-subset NAME); nothing that was there changes."""
    import shutil

    data, model, full = augmented[1]["reg_pairs"]
    copy = tmp_path / "bin"
    shutil.copytree(data, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert augment_folder(str(copy), model, out_split="train_aug", n_aug=N, top_k=TOP_K,
                          replace_prob=P, seed=1) == str(copy)
    for path, content in before.items():
        assert path.read_bytes() == content, path
    for f in ("input0", "input1"):
        assert _rows(str(copy), f, "train_aug") == _rows(full, f, "train")
    assert (copy / "label" / "train_aug.label").read_text() == Path(full, "label", "train.label").read_text()
    total = len(_rows(full, "input0", "train"))
    assert layout.load_original_flags(str(copy), "train_aug", total).tolist() == \
        layout.load_original_flags(full, "train", total).tolist()
    assert layout.load_original_flags(str(copy), "train", 24).all()  # train itself: untouched
    assert not [p for p in copy.iterdir() if p.name.startswith(".augment.tmp")]
    with pytest.raises(ConfigError, match="exists"):
        augment_folder(str(copy), model, out_split="train_aug")
    with pytest.raises(ConfigError, match="exactly one of"):
        augment_folder(str(copy), model, out=str(tmp_path / "x"), out_split="other")
