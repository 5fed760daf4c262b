"""Word-replacement augmentation of TinyBERT (Jiao et al. 2020, arXiv 1909.10351, Sec. 3.3,
Algorithm 1 and the released ``TinyBERT/data_augmentation.py``), without fairseq.

For a sentence of words ``w_1..w_n``:

1. Words that may be replaced: alphabetic words that are not stop words (TinyBERT's
   ``_is_valid`` and ``StopWordsList``; :func:`is_replaceable`).
2. Candidates ``C(w_i)`` of such a word (computed by the caller, see
   :mod:`fairseq_qbert.augment.mlm`):

   * a single-piece word: the pretrained masked LM's ``K`` most likely tokens at
     ``w_i``'s position with that position masked, ``topK(softmax(MLM(x_{\\i}))_i)``, keeping
     only whole-word tokens (TinyBERT drops ``##`` pieces; :func:`top_k_candidates`);
   * a multi-piece word: its ``K`` nearest neighbours in an embedding space by cosine
     similarity (TinyBERT: GloVe; :func:`nearest_neighbours`);
   * an empty set becomes ``{w_i}`` (the word itself).
3. Repeat ``N`` times: every replaceable word ``w_i`` draws ``c ~ Uniform(C(w_i))`` and
   ``u ~ Uniform[0, 1)``, and becomes ``c`` if ``u < p``. A result equal to the original
   sentence or to an earlier variant is dropped, so a sentence yields *at most* ``N``
   variants (:func:`sample_variants`; TinyBERT's defaults: N = 20-30, K = M = 15, p = 0.4).

Randomness is a numpy ``Generator`` per (seed, row, field) (:func:`row_rng`), so each
row's variants depend on the seed and the row only -- not on batching, order or how many
rows come before it.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from qbert.errors import ConfigError

#: TinyBERT's ``StopWordsList`` (data_augmentation.py): never replaced
STOP_WORDS = frozenset([
    'i', 'me', 'my', 'myself', 'we', 'our', 'ours', 'ourselves', 'you', "you're", "you've",
    "you'll", "you'd", 'your', 'yours', 'yourself', 'yourselves', 'he', 'him', 'his', 'himself',
    'she', "she's", 'her', 'hers', 'herself', 'it', "it's", 'its', 'itself', 'they', 'them',
    'their', 'theirs', 'themselves', 'this', 'that', "that'll",
    'these', 'those', 'am', 'is', 'are', 'was', 'were', 'be', 'been', 'being', 'have', 'has',
    'had', 'having', 'do', 'does', 'did', 'doing', 'a', 'an', 'the', 'and', 'but', 'if', 'or',
    'because', 'as', 'until', 'while', 'of', 'at', 'by', 'for', 'with', 'about', 'against',
    'between', 'into', 'through', 'during', 'before', 'after', 'above', 'below', 'to', 'from',
    'up', 'down', 'in', 'out', 'on', 'off', 'over', 'under', 'again', 'further', 'then', 'once',
    'here', 'there', 'all', 'any', 'both', 'each', 'few', 'more',
    'most', 'other', 'some', 'such', 'no', 'nor', 'not', 'only', 'own', 'same', 'so', 'than',
    'too', 'very', 's', 't', 'can', 'will', 'just', 'don', "don't", 'should', "should've", 'now',
    'd', 'll', 'm', 'o', 're', 've', 'y', 'ain', 'aren', "aren't", 'couldn', "couldn't", 'didn',
    "didn't", 'doesn', "doesn't", 'hadn', "hadn't", 'hasn', "hasn't", 'haven', "haven't", 'isn',
    "isn't", 'ma', 'mightn', "mightn't", 'mustn', "mustn't", 'needn', "needn't", 'shan',
    "shan't", 'shouldn', "shouldn't", 'wasn', "wasn't", 'weren', "weren't", 'won', "won't",
    'wouldn', "wouldn't", "'s", "'re"])

Word = Tuple[int, ...]  # the token ids of one word


def check_params(n_aug: int, top_k: int, replace_prob: float) -> None:
    """``N >= 1``, ``K >= 1``, ``0 <= p <= 1``, else a one-line ConfigError naming the flag."""
    if not isinstance(n_aug, int) or n_aug < 1:
        raise ConfigError(f"--n-aug must be an integer >= 1 (variants per sentence), got {n_aug}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k must be an integer >= 1 (candidates per word), got {top_k}")
    if not 0.0 <= replace_prob <= 1.0:
        raise ConfigError(f"--replace-prob must be in [0, 1], got {replace_prob}")


def is_replaceable(word: str) -> bool:
    """TinyBERT's rule: only letters a-z (any case) and not a stop word."""
    w = word.lower()
    return bool(w) and w.isascii() and w.isalpha() and w not in STOP_WORDS


def word_spans(word_start: Sequence[bool]) -> List[Tuple[int, int]]:
    """``[start, end)`` token spans of the words, given which tokens start a word.

    The first token always starts a word (a sentence-initial GPT-2 piece has no space
    marker); a token that does not start a word continues the previous one (TinyBERT's
    ``##`` pieces).
    """
    spans: List[Tuple[int, int]] = []
    for i, start in enumerate(word_start):
        if start or not spans:
            spans.append((i, i + 1))
        else:
            spans[-1] = (spans[-1][0], i + 1)
    return spans


def top_k_candidates(scores: torch.Tensor, k: int, allowed: torch.Tensor) -> List[int]:
    """The ``k`` highest-scoring token ids of ``scores`` (V,), then those ``allowed`` (V,) bool.

    As TinyBERT: ``argsort(scores, descending)[:k]`` over the *whole* vocabulary, then
    pieces that are no whole word (and special symbols) are dropped, so fewer than ``k``
    may remain. Ties are broken by the lower id (a stable sort), so the result is
    deterministic.
    """
    order = torch.sort(scores.float(), descending=True, stable=True).indices[:k]
    return [int(i) for i in order.tolist() if bool(allowed[i])]


def nearest_neighbours(embedding: torch.Tensor, query: torch.Tensor, k: int,
                       allowed: torch.Tensor, exclude: Sequence[int] = ()) -> List[int]:
    """The ``k`` allowed rows of ``embedding`` (V, C) most cosine-similar to ``query`` (C,).

    TinyBERT's ``_word_distance`` for words the masked LM cannot predict as one token:
    ``argsort(-cos(E_v, q))[:k]`` with the word itself excluded. Here ``E`` is the
    pretrained model's own input embedding table (TinyBERT uses GloVe) and ``q`` the mean
    embedding of the word's pieces. Ties: lower id first.
    """
    emb = embedding.float()
    q = query.float()
    sims = (emb @ q) / (emb.norm(dim=1).clamp(min=1e-12) * q.norm().clamp(min=1e-12))
    mask = allowed.clone().bool()
    for i in exclude:
        mask[i] = False
    sims = torch.where(mask, sims, torch.full_like(sims, float("-inf")))
    order = torch.sort(sims, descending=True, stable=True).indices[:k]
    return [int(i) for i in order.tolist() if bool(mask[i])]


def row_rng(seed: int, row: int, field: int = 0) -> np.random.Generator:
    """The random stream of one (row, field): depends on nothing else."""
    return np.random.default_rng([int(seed), int(row), int(field)])


def sample_variants(words: Sequence[Word], candidates: Dict[int, Sequence[Word]], n_aug: int,
                    replace_prob: float, rng: np.random.Generator) -> List[List[int]]:
    """TinyBERT's sampling loop (see the module docstring): at most ``n_aug`` distinct variants.

    ``words``: the sentence as words (tuples of token ids); ``candidates``: word index ->
    its candidate words (every index a replaceable word, each list non-empty). Per
    attempt, per replaceable word in index order: one ``rng.integers`` draw picks the
    candidate, one ``rng.random()`` draw decides the replacement (``< replace_prob``).
    Returns the variants as flat token-id lists, in the order they were found.
    """
    original = [t for w in words for t in w]
    seen = {tuple(original)}
    out: List[List[int]] = []
    order = sorted(candidates)
    for _ in range(n_aug):
        new = list(words)
        for idx in order:
            choices = candidates[idx]
            pick = choices[int(rng.integers(len(choices)))]
            if rng.random() < replace_prob:
                new[idx] = tuple(pick)
        flat = tuple(t for w in new for t in w)
        if flat not in seen:
            seen.add(flat)
            out.append(list(flat))
    return out


def replaced_positions(original: Sequence[Word], variant: Sequence[Word]) -> List[int]:
    """Indices of the words that differ between two word lists of equal length."""
    return [i for i, (a, b) in enumerate(zip(original, variant)) if tuple(a) != tuple(b)]


def split_words(tokens: Sequence[int], spans: Sequence[Tuple[int, int]]) -> List[Word]:
    """``tokens`` cut into words at ``spans``."""
    return [tuple(int(t) for t in tokens[s:e]) for s, e in spans]
