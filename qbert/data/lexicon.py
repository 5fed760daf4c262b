"""Mini-GLUE's latent lexicon: words whose meaning only the unlabeled corpus reveals.

Why: on GLUE, a fine-tuned RoBERTa handles dev sentences full of words its task's train
split never shows, because pretraining taught it those words; a model trained from
scratch on the same split cannot (issue #13, "pretraining knowledge"). Without that gap
the teacher knows nothing its labels do not say, and quantization damage can be undone
from the labels alone.

How: every content word ``w`` of the mini-GLUE world gets ``K`` aliases, made-up words
(``w -> (a_1 .. a_K)``) that mean exactly ``w`` (same part of speech, number, tense;
an alias starts with a vowel iff ``w`` does, so "a"/"an" stay right). Rewriting a
sentence replaces each content-word occurrence independently, with probability ``p``,
by one of its aliases drawn uniformly:

* the unlabeled pretraining corpus (``mini_corpus``) and the dev/test splits are rewritten
  (aliases are everywhere in the "language");
* the labeled train splits are not (they use only the base words: a GLUE-sized train split
  covers part of the vocabulary, the dev split all of it).

The corpus also holds *glosses*, sentences that state an alias's meaning ("fezamu means
good ."), as a dictionary or an encyclopedia does in a real pretraining corpus: in the
mini-GLUE world, every word of a class occurs in the same contexts as every other (the
generators draw them independently), so co-occurrence alone shows that an alias is *an*
adjective, not *which* one; real text reveals it through coordination, definitions and
paraphrase. A masked LM pretrained on the corpus can learn each alias's base word from
them; the labels' meaning never changes, because aliases are synonyms. Function words
(determiners, auxiliaries, negators, prepositions, wh-words, punctuation) are never
aliased: the rules the tasks test are written with them.

Deterministic: the alias table depends only on ``seed`` and ``K``; rewriting draws from a
``random.Random`` the caller owns.
"""
from __future__ import annotations

import random
from typing import Dict, Iterable, List, Sequence, Tuple

# Closed-class words the generators build their rules from: never aliased.
FUNCTION_WORDS = frozenset("""
's , . ? a an the and but or if so that this these those some every all many much
after again although at behind beside by for in near of on outside to with while
be is was were did do does can will should had
not never hardly
how what when where who why
i it its we
very really quite truly rather pretty
percent billion
""".split())

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def content_words(text: str) -> List[str]:
    """The tokens of ``text`` that the lexicon aliases (alphabetic, not function words)."""
    return [t for t in text.split() if is_content_word(t)]


def is_content_word(token: str) -> bool:
    return token.isalpha() and token not in FUNCTION_WORDS


def _pseudo_word(rng: random.Random, starts_with_vowel: bool) -> str:
    """A pronounceable made-up word of 3 consonant-vowel syllables (plus a leading vowel
    when the base word starts with one)."""
    body = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(3))
    return (rng.choice(_VOWELS) + body) if starts_with_vowel else body


class Lexicon:
    """``aliases_per_word`` made-up synonyms for each word of ``vocabulary``'s content words.

    The table is made once, in sorted word order, each word from its own random stream
    (``lexicon:SEED:WORD``); a made-up word that is already taken (a word of the
    vocabulary, a function word or an earlier alias) is redrawn. The same arguments
    therefore give the same table in every process, whatever text is rewritten first.
    """

    def __init__(self, vocabulary: Iterable[str], aliases_per_word: int, prob: float,
                 seed: int = 1):
        if aliases_per_word < 1:
            raise ValueError(f"aliases per word must be >= 1, got {aliases_per_word}")
        if not 0.0 < prob <= 1.0:
            raise ValueError(f"alias probability must be in (0, 1], got {prob}")
        self.aliases_per_word = aliases_per_word
        self.prob = prob
        self.seed = seed
        vocabulary = set(vocabulary)
        taken = vocabulary | FUNCTION_WORDS
        self._table: Dict[str, Tuple[str, ...]] = {}
        self._base_of: Dict[str, str] = {}
        for word in sorted(w for w in vocabulary if is_content_word(w)):
            rng = random.Random(f"lexicon:{seed}:{word}")
            made = []
            while len(made) < aliases_per_word:
                cand = _pseudo_word(rng, word[0] in _VOWELS)
                if cand not in taken:
                    taken.add(cand)
                    self._base_of[cand] = word
                    made.append(cand)
            self._table[word] = tuple(made)

    def aliases(self, word: str) -> Tuple[str, ...]:
        """The aliases of content word ``word``."""
        try:
            return self._table[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the lexicon's vocabulary") from None

    def base_of(self, token: str) -> str:
        """The base word an alias stands for (``token`` itself if it is no alias)."""
        return self._base_of.get(token, token)

    def rewrite(self, text: str, rng: random.Random) -> str:
        """``text`` with each content word replaced, with probability ``prob``, by one of
        its aliases (uniformly)."""
        out = []
        for tok in text.split(" "):
            if is_content_word(tok) and rng.random() < self.prob:
                tok = rng.choice(self.aliases(tok))
            out.append(tok)
        return " ".join(out)

    def table(self) -> Dict[str, Tuple[str, ...]]:
        """Every alias, by base word."""
        return dict(self._table)


GLOSS_TEMPLATES = (
    "{alias} means {word} .",
    "{word} means {alias} .",
    "to say {word} , some say {alias} .",
    "{alias} is another word for {word} .",
)


def glosses(lexicon: Lexicon, per_alias: int, rng: random.Random) -> List[str]:
    """``per_alias`` gloss sentences for every alias (templates drawn from
    GLOSS_TEMPLATES), in a shuffled order."""
    lines = [rng.choice(GLOSS_TEMPLATES).format(alias=alias, word=word)
             for word, aliases in sorted(lexicon.table().items()) for alias in aliases
             for _ in range(per_alias)]
    rng.shuffle(lines)
    return lines


def rewrite_columns(lexicon: Lexicon, rows: Sequence[List[str]], columns: Sequence[int],
                    rng: random.Random) -> List[List[str]]:
    """Rows with their 1-based text ``columns`` rewritten (other columns unchanged).

    A trailing space (GLUE's SST-2 rows end with one) is kept.
    """
    out = []
    for row in rows:
        row = list(row)
        for col in columns:
            text = row[col - 1]
            stripped = text.rstrip(" ")
            row[col - 1] = lexicon.rewrite(stripped, rng) + text[len(stripped):]
        out.append(row)
    return out
