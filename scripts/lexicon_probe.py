#!/usr/bin/env python3
"""Does a pretrained masked LM know the latent lexicon's aliases? (README "Data", issue #13)

    python scripts/lexicon_probe.py PRETRAIN/model.pt PRETRAIN/dict.txt --aliases K [--seed 1]

For every alias in the dictionary: the cosine between its input embedding and its base
word's, the cosine with a random other word's alias (the baseline), and whether the nearest
base word (cosine) is its own. A masked LM that learned the aliases puts most aliases next
to their base word.
"""
import argparse
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from qbert.data.mini_glue import world_lexicon  # noqa: E402
from qbert.safe_load import safe_load  # noqa: E402


def probe(embeddings: torch.Tensor, index, lexicon, seed: int = 0):
    """(mean cos(base, alias), mean cos(base, random alias), nearest-base-word accuracy, n)."""
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    words = [w for w in lexicon.table() if index(w) is not None]
    bases = torch.tensor([index(w) for w in words])
    rng = random.Random(seed)
    same, other, hits, n = [], [], 0, 0
    for w in words:
        for a in lexicon.aliases(w):
            j = index(a)
            if j is None:
                continue
            same.append(float(emb[index(w)] @ emb[j]))
            k = index(lexicon.aliases(rng.choice(words))[0])
            if k is not None:
                other.append(float(emb[index(w)] @ emb[k]))
            hits += words[int((emb[bases] @ emb[j]).argmax())] == w
            n += 1
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    return mean(same), mean(other), hits / max(1, n), n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("dict")
    p.add_argument("--aliases", type=int, required=True)
    p.add_argument("--seed", type=int, default=1, help="the mini-GLUE seed of the lexicon")
    args = p.parse_args(argv)
    with open(args.dict, encoding="utf-8") as f:
        # fairseq's Dictionary: <s> <pad> </s> <unk> come first, then dict.txt's lines
        ids = {line.split()[0]: i + 4 for i, line in enumerate(f) if line.strip()}
    state = safe_load(args.checkpoint)["model"]
    key = next(k for k in state if k.endswith("embed_tokens.weight"))
    same, other, acc, n = probe(state[key], ids.get, world_lexicon(args.aliases, 0.5, args.seed))
    print(f"cos(base, alias) {same:.3f} | cos(base, random alias) {other:.3f} | "
          f"nearest base word is its own {100 * acc:.1f} % of {n} aliases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
