"""Mini pretraining corpus: unlabeled text from the mini-GLUE world, for masked-LM pretraining.

Real RoBERTa is pretrained on unlabeled text before it is fine-tuned on a GLUE task, and
what knowledge distillation transfers during quantization-aware fine-tuning is mostly
that pretrained knowledge (TernaryBERT, arXiv 2009.12812, Sec. 3.3). A tiny teacher
trained from scratch on a mini-GLUE task knows nothing its labels don't say. This module
writes the missing stage's data: sentences from the same generators as mini-GLUE, drawn
from their own random streams (``mini-glue:SEED:TASK:pretrain``, disjoint from the
train/dev/test streams), **without labels**. Like a web crawl, the corpus may contain
sentences that also occur in a dev set; it never contains a label. CoLA contributes only
its acceptable sentences (a corpus is grammatical text; the ungrammatical ones are what
CoLA's labels are about).

Output, one sentence per line, in the raw-text format of ``fairseq-preprocess
--only-source`` for fairseq's ``masked_lm`` task (``--sample-break-mode complete``)::

    OUT/train.txt   OUT/valid.txt

CLI::

    python -m qbert.data.mini_corpus --out-dir DIR [--sentences-per-task 20000]
        [--valid-sentences-per-task 500] [--seed 1] [--tasks all]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Iterator, List, Optional, Sequence

from .glue_tasks import TASK_NAMES, UnknownTaskError, get_task, parse_tasks
from .lexicon import Lexicon
from .lexicon import glosses as gloss_lines
from .mini_glue import (
    DEFAULT_ALIAS_PROB,
    DEFAULT_ALIASES,
    DEFAULT_SEED,
    _non_negative_int,
    _positive_int,
    _split_rows,
    add_lexicon_args,
    world_lexicon,
)

DEFAULT_SENTENCES_PER_TASK = 20000
DEFAULT_VALID_SENTENCES_PER_TASK = 500
DEFAULT_GLOSSES = 40  # gloss sentences per alias in train.txt (qbert.data.lexicon.glosses)


def task_sentences(task: str, n_rows: int, seed: int, stream: str,
                   lexicon: Optional[Lexicon] = None) -> Iterator[str]:
    """Text fields of ``n_rows`` unlabeled examples of ``task`` from stream ``stream``.

    Pair tasks give both sentences of a row, on consecutive lines. CoLA keeps only rows
    labelled acceptable (``1``); every other task's label column is dropped unread. With
    ``lexicon``, content words are replaced by their aliases as in the dev splits.
    """
    spec = get_task(task)
    for row in _split_rows(spec.name, stream, n_rows, seed, lexicon, aliased=True):
        if spec.name == "CoLA" and row[spec.label_column - 1] != "1":
            continue
        for col in spec.input_columns:
            text = row[col - 1].strip()
            if text:
                yield text


def write_corpus(out_dir: str, tasks: Sequence[str] | str = "all",
                 rows_per_task: int = DEFAULT_SENTENCES_PER_TASK,
                 valid_rows_per_task: int = DEFAULT_VALID_SENTENCES_PER_TASK,
                 seed: int = DEFAULT_SEED, aliases: int = DEFAULT_ALIASES,
                 alias_prob: float = DEFAULT_ALIAS_PROB, glosses: int = DEFAULT_GLOSSES) -> List[str]:
    """Write OUT/train.txt and OUT/valid.txt; returns their paths.

    Tasks are interleaved row by row so that every block of ``--tokens-per-sample``
    tokens mixes the tasks' domains, as a shuffled web corpus would. With ``aliases``,
    ``glosses`` gloss sentences per alias (one in valid) are spread evenly over train.txt.
    """
    names = parse_tasks(tasks)
    lexicon = world_lexicon(aliases, alias_prob, seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for split, n_rows in (("train", rows_per_task), ("valid", valid_rows_per_task)):
        per_task = [list(task_sentences(t, n_rows, seed, f"pretrain-{split}", lexicon)) for t in names]
        lines = [sentences[i] for i in range(max(len(s) for s in per_task))
                 for sentences in per_task if i < len(sentences)]
        if lexicon is not None and glosses:
            extra = gloss_lines(lexicon, glosses if split == "train" else 1,
                                random.Random(f"mini-glue:{seed}:glosses:{split}"))
            every = max(1, len(lines) // len(extra))
            merged = []
            for i, line in enumerate(lines):
                merged.append(line)
                if i % every == every - 1 and extra:
                    merged.append(extra.pop())
            lines = merged + extra
        path = os.path.join(out_dir, f"{split}.txt")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)
        paths.append(path)
    return paths


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbert-mini-corpus",
        description="Write an unlabeled mini-GLUE-world corpus for masked-LM pretraining.")
    parser.add_argument("--out-dir", required=True, help="folder for train.txt and valid.txt")
    parser.add_argument("--tasks", default="all",
                        help=f"comma-separated subset of {','.join(TASK_NAMES)} or 'all' (default)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--sentences-per-task", type=_positive_int, default=DEFAULT_SENTENCES_PER_TASK,
                        help="generated examples per task for train.txt (pair tasks give 2 lines each)")
    parser.add_argument("--valid-sentences-per-task", type=_positive_int,
                        default=DEFAULT_VALID_SENTENCES_PER_TASK)
    add_lexicon_args(parser)
    parser.add_argument("--glosses", type=_non_negative_int, default=DEFAULT_GLOSSES,
                        help=f"gloss sentences per alias in train.txt ('ALIAS means WORD .'; "
                             f"default {DEFAULT_GLOSSES}; with --aliases only)")
    args = parser.parse_args(argv)
    try:
        parse_tasks(args.tasks)
    except UnknownTaskError as e:
        parser.exit(2, f"error: {e}\n")
    for path in write_corpus(args.out_dir, args.tasks, args.sentences_per_task,
                             args.valid_sentences_per_task, args.seed, args.aliases, args.alias_prob, args.glosses):
        with open(path, encoding="utf-8") as f:
            print(f"{path}: {sum(1 for _ in f)} lines")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
