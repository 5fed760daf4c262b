"""qbert.augment without fairseq: TinyBERT's word rule, candidate sets, sampling loop, layout."""
import numpy as np
import pytest
import torch

from qbert.augment import core, layout
from qbert.errors import ConfigError, DataError


def test_replaceable_words_follow_tinybert():
    assert core.is_replaceable("river") and core.is_replaceable("River")
    for word in ("the", "not", "The", "w0", "it's", ".", "", "naïve"):
        assert not core.is_replaceable(word), word


def test_word_spans_join_continuation_pieces():
    assert core.word_spans([True, True, True]) == [(0, 1), (1, 2), (2, 3)]
    assert core.word_spans([True, False, False, True, False]) == [(0, 3), (3, 5)]
    # a sentence-initial piece without a space marker still starts a word
    assert core.word_spans([False, False, True]) == [(0, 2), (2, 3)]
    assert core.split_words([5, 6, 7, 8], [(0, 3), (3, 4)]) == [(5, 6, 7), (8,)]


def test_top_k_takes_k_over_the_whole_vocab_then_filters():
    scores = torch.tensor([0.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    allowed = torch.tensor([True, True, False, True, True, True])
    # top 3 = ids 1, 2, 3; id 2 is no whole word -> dropped, nothing refills (TinyBERT)
    assert core.top_k_candidates(scores, 3, allowed) == [1, 3]
    # ties: lower id first, deterministic
    assert core.top_k_candidates(torch.tensor([1.0, 2.0, 2.0, 2.0]), 2, torch.ones(4, dtype=torch.bool)) == [1, 2]


def test_nearest_neighbours_by_cosine_excluding_disallowed():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.1]])
    allowed = torch.tensor([True, True, True, True, False])
    got = core.nearest_neighbours(emb, torch.tensor([1.0, 0.0]), 2, allowed, exclude=[0])
    assert got == [1, 2]


def test_sampling_is_deterministic_distinct_and_at_most_n():
    words = [(10,), (11,), (12,), (13,)]
    cands = {0: [(20,), (21,), (22,)], 2: [(30,), (31,)], 3: [(40,)]}
    a = core.sample_variants(words, cands, 8, 0.5, core.row_rng(1, 5, 0))
    b = core.sample_variants(words, cands, 8, 0.5, core.row_rng(1, 5, 0))
    assert a == b and 0 < len(a) <= 8
    assert len({tuple(v) for v in a}) == len(a)
    assert [10, 11, 12, 13] not in a
    for v in a:
        assert v[1] == 11  # word 1 has no candidates: never replaced
        assert v[0] in (10, 20, 21, 22) and v[2] in (12, 30, 31) and v[3] in (13, 40)
    assert core.sample_variants(words, cands, 8, 0.5, core.row_rng(2, 5, 0)) != a
    # p = 0: nothing changes, so no variant survives de-duplication
    assert core.sample_variants(words, cands, 8, 0.0, core.row_rng(1, 5, 0)) == []
    # p = 1 with one candidate each: exactly one variant
    one = {i: [c[0]] for i, c in cands.items()}
    assert core.sample_variants(words, one, 8, 1.0, core.row_rng(1, 5, 0)) == [[20, 11, 30, 40]]


def test_rng_per_row_and_field_is_independent_of_others():
    x = core.row_rng(3, 7, 1).random(4)
    core.row_rng(3, 6, 1).random(100)
    assert np.array_equal(core.row_rng(3, 7, 1).random(4), x)
    assert not np.array_equal(core.row_rng(3, 7, 0).random(4), x)


@pytest.mark.parametrize("n,k,p,flag", [(0, 5, 0.4, "--n-aug"), (3, 0, 0.4, "--top-k"),
                                        (3, 5, 1.5, "--replace-prob"), (-1, 5, 0.4, "--n-aug")])
def test_bad_parameters_are_one_line_errors(n, k, p, flag):
    with pytest.raises(ConfigError) as e:
        core.check_params(n, k, p)
    assert flag in str(e.value) and "\n" not in str(e.value)


def test_layout_flags_of_plain_and_augmented_folders(tmp_path):
    assert layout.load_original_flags(str(tmp_path), "train", 3).tolist() == [True] * 3
    meta = layout.AugmentMeta(n_aug=2, top_k=3, replace_prob=0.4, seed=1, pretrained="x",
                              fields=["input0"], mlm_input="masked",
                              splits={"train": {"rows": 5, "original_rows": 2}})
    layout.write_meta(str(tmp_path), meta)
    with pytest.raises(DataError, match="missing"):
        layout.load_original_flags(str(tmp_path), "train", 5)
    layout.write_rows(str(tmp_path), "train", np.array([0, 1, 0, 0, 1]), 2)
    assert layout.load_original_flags(str(tmp_path), "train", 5).tolist() == [True, True, False, False, False]
    assert layout.load_source_rows(str(tmp_path), "train", 5).tolist() == [0, 1, 0, 0, 1]
    assert layout.load_original_flags(str(tmp_path), "valid", 4).all()  # not augmented
    with pytest.raises(DataError, match="5 rows but the split has 6"):
        layout.load_original_flags(str(tmp_path), "train", 6)
    assert layout.read_meta(str(tmp_path)) == meta
    (tmp_path / "augment" / "augment.json").write_text("{")
    with pytest.raises(DataError, match="not a qbert-augment description"):
        layout.read_meta(str(tmp_path))
