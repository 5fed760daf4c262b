"""The pretrained masked LM of TinyBERT augmentation: loading it, and the candidate words.

Implements steps 1-2 of :mod:`qbert.augment.core` (TinyBERT, arXiv 1909.10351, Sec. 3.3)
on fairseq binaries: a single-piece word ``w_i`` at token position ``s`` gets the
``K`` most likely whole-word tokens of ``softmax(MLM(x))_s``, where ``x`` is TinyBERT's
MLM input -- the sentence with position ``s`` masked, a separator, and the unmasked
sentence (``<s> w_1 .. <mask> .. w_n </s> w_1 .. w_n </s>``; ``--mlm-input masked`` drops
the second copy) -- and a multi-piece word gets its ``K`` nearest neighbours (cosine) among
the single-token words of the model's input embedding table, the query being the mean
embedding of its pieces (TinyBERT uses GloVe there; a RoBERTa checkpoint carries its own).

The checkpoint is read through the plugin's restricted unpickler
(:func:`fairseq_qbert.checkpoint_loading.load_checkpoint_to_cpu`), and must be a
RoBERTa-family *masked LM*: trained with ``--task masked_lm`` (as ``roberta.base/model.pt``
and ``scripts/pretrain_mini.sh``'s ``model.pt``), full precision, with its LM head, and
built on the data's dictionary. Each violation is one CheckpointError line.
"""
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from qbert.augment.core import (
    Word,
    is_replaceable,
    nearest_neighbours,
    split_words,
    top_k_candidates,
    word_spans,
)
from qbert.checkpoint_state import first_line, is_quantizer_key, model_args, read_checkpoint
from qbert.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

EMBED_KEY = "encoder.sentence_encoder.embed_tokens.weight"
LM_HEAD_KEY = "encoder.lm_head.weight"
MLM_INPUTS = ("with-original", "masked")
CANDIDATES = ("content", "tinybert")


# ---------------------------------------------------------------------------- vocabulary
@dataclass
class WordVocab:
    """Which token ids start a word, which may stand in as a whole word, and their text.

    ``word_start[v]``: token ``v`` begins a word (else it continues the previous one);
    ``allowed_first`` / ``allowed_inner``: tokens that may replace a sentence-initial /
    later word (whole words, no special symbols); ``texts[v]``: the token's text, pieces
    of a word concatenated give the word (used for TinyBERT's replaceable-word rule).
    """
    word_start: torch.Tensor
    allowed_first: torch.Tensor
    allowed_inner: torch.Tensor
    texts: List[str]

    def text(self, word: Word) -> str:
        return "".join(self.texts[t] for t in word).strip()

    def content_words_only(self) -> "WordVocab":
        """The same vocabulary whose candidates are only words TinyBERT itself would replace
        (letters, no stop word): ``--candidates content``. TinyBERT keeps any whole-word
        token its BERT proposes; with a small masked LM that lets punctuation and stop words
        (``not``!) in, which turns a word replacement into a different sentence structure."""
        content = torch.tensor([is_replaceable(t.strip()) for t in self.texts])
        return WordVocab(self.word_start, self.allowed_first & content, self.allowed_inner & content,
                         self.texts)


def _special_ids(dictionary) -> set:
    ids = {dictionary.bos(), dictionary.pad(), dictionary.eos(), dictionary.unk()}
    ids.update(i for i, s in enumerate(dictionary.symbols)
               if s.startswith("madeupword") or s == "<mask>")
    return ids


def whitespace_vocab(dictionary) -> WordVocab:
    """``--bpe whitespace`` (mini-GLUE): every symbol is a word of its own."""
    n = len(dictionary)
    special = _special_ids(dictionary)
    allowed = torch.tensor([i not in special for i in range(n)])
    return WordVocab(word_start=torch.ones(n, dtype=torch.bool), allowed_first=allowed,
                     allowed_inner=allowed.clone(), texts=list(dictionary.symbols))


def gpt2_vocab(dictionary, encoder_json: str) -> WordVocab:
    """``--bpe gpt2`` (roberta.base): dictionary symbols are GPT-2 token ids; a token whose
    byte-level string starts with ``Ġ`` (a space) starts a word. A later word is replaced by
    a ``Ġ``-token, the first word of a sentence by a token without it."""
    import json

    from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

    try:
        with open(encoder_json, encoding="utf-8") as f:
            encoder = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"--encoder-json {encoder_json}: unreadable ({first_line(e)})") from None
    decoder = {v: k for k, v in encoder.items()}
    byte_decoder = {v: k for k, v in bytes_to_unicode().items()}
    special = _special_ids(dictionary)
    n = len(dictionary)
    start, first, inner, texts = [], [], [], []
    for i, sym in enumerate(dictionary.symbols):
        piece = decoder.get(int(sym)) if sym.isdigit() else None
        if piece is None or i in special:
            start.append(True)
            first.append(False)
            inner.append(False)
            texts.append("" if i in special else sym)
            continue
        text = bytearray(byte_decoder.get(c, ord("?")) for c in piece).decode("utf-8", "replace")
        spaced = piece.startswith("\u0120")
        word = text.strip()
        whole = bool(word) and word.isalpha()
        start.append(spaced)
        first.append(whole and not spaced)
        inner.append(whole and spaced)
        texts.append(text)
    return WordVocab(torch.tensor(start[:n]), torch.tensor(first[:n]), torch.tensor(inner[:n]), texts)


# ---------------------------------------------------------------------------- model
def load_masked_lm(path: str, dictionary, dict_txt: Optional[str] = None):
    """The fairseq ``RobertaModel`` masked LM in ``path`` (eval, frozen) for ``dictionary``.

    ``dictionary``: the data's ``input0`` dictionary with ``<mask>`` added (as fairseq's
    ``sentence_prediction`` and ``masked_lm`` tasks do); ``dict_txt``: the model's own
    ``dict.txt`` (default: next to ``path``, as in ``roberta.base/``), compared symbol by
    symbol when it exists.
    """
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.models.roberta import RobertaModel

    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu

    src = f"--pretrained {path}"
    state = read_checkpoint(path, load_checkpoint_to_cpu, source=src)
    args = model_args(state, src)
    arch = getattr(args, "arch", None) or getattr(args, "_name", None)
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls is None or not issubclass(model_cls, RobertaModel):
        raise CheckpointError(f"{src}: arch '{arch}' is not a RoBERTa masked LM")
    task_name = _task_name(state)
    if task_name is not None and task_name != "masked_lm":
        raise CheckpointError(f"{src}: trained with --task {task_name}, not a pretrained masked LM "
                              "(--task masked_lm); give the pretraining checkpoint, e.g. "
                              "roberta.base/model.pt or pretrain_mini.sh's OUT/model.pt")
    state_dict = state["model"]
    for key in list(state_dict):  # as RobertaModel.upgrade_state_dict_named does
        if key.startswith("decoder."):
            state_dict["encoder." + key[len("decoder."):]] = state_dict.pop(key)
    if any(is_quantizer_key(k) for k in state_dict):
        raise CheckpointError(f"{src}: the checkpoint is quantized; give the full-precision "
                              "pretrained masked LM")
    if EMBED_KEY not in state_dict or LM_HEAD_KEY not in state_dict:
        missing = EMBED_KEY if EMBED_KEY not in state_dict else LM_HEAD_KEY
        raise CheckpointError(f"{src}: no '{missing}'; not a RoBERTa masked LM with its LM head")
    vocab = state_dict[EMBED_KEY].size(0)
    if vocab != len(dictionary):
        raise CheckpointError(f"{src}: dictionary mismatch: the model has {vocab} tokens, the data's "
                              f"dictionary {len(dictionary)} (with <mask>); binarize the data with "
                              "the model's dict.txt")
    dict_txt = dict_txt or os.path.join(os.path.dirname(os.path.abspath(path)), "dict.txt")
    if os.path.isfile(dict_txt):
        own = Dictionary.load(dict_txt)
        own.add_symbol("<mask>")
        for i, (a, b) in enumerate(zip(own.symbols, dictionary.symbols)):
            if a != b:
                raise CheckpointError(f"{src}: dictionary mismatch with {dict_txt}: entry {i} is "
                                      f"'{a}' there but '{b}' in the data; binarize the data with "
                                      "the model's dict.txt")
        if len(own) != len(dictionary):
            raise CheckpointError(f"{src}: dictionary mismatch: {dict_txt} has {len(own)} entries, "
                                  f"the data {len(dictionary)}")

    class _Task:  # what RobertaModel.build_model asks of a task
        source_dictionary = dictionary

        @staticmethod
        def max_positions():
            return getattr(args, "max_positions", 512)

    args.arch = "roberta"
    for name in ("encoder_layers_to_keep",):
        if hasattr(args, name):
            setattr(args, name, None)
    try:
        model = RobertaModel.build_model(args, _Task())
        model.upgrade_state_dict_named(state_dict, "")
        model.load_state_dict(state_dict, strict=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{src}: cannot build the masked LM from it ({first_line(e)})") from None
    model.requires_grad_(False)
    model.eval()
    return model


def _task_name(state) -> Optional[str]:
    cfg = state.get("cfg")
    if cfg is not None:
        node = cfg.get("task") if hasattr(cfg, "get") else None
        name = node.get("_name") if node is not None and hasattr(node, "get") else None
        if isinstance(name, str):
            return name
    args = state.get("args")
    name = getattr(args, "task", None) if args is not None else None
    return name if isinstance(name, str) else None


def max_positions(model) -> int:
    positions = model.encoder.sentence_encoder.embed_positions
    value = getattr(positions, "max_positions", None) if positions is not None else None
    return int(value) if value else 512


# ---------------------------------------------------------------------------- candidates
def mlm_input(body: Sequence[int], position: int, dictionary, mode: str, limit: int
              ) -> Optional[Tuple[List[int], int]]:
    """(token ids, index of the mask) of the MLM input that masks ``body[position]``.

    ``body``: the sentence's token ids without ``</s>``. ``with-original`` (TinyBERT):
    ``<s> masked </s> body </s>``; ``masked``: ``<s> masked </s>``. Cut to ``limit``
    positions (the copy first); None when the mask itself falls outside them.
    """
    masked = list(body)
    masked[position] = dictionary.index("<mask>")
    tokens = [dictionary.bos(), *masked, dictionary.eos()]
    if mode == "with-original":
        tokens += [*body, dictionary.eos()]
    if 1 + position >= limit:
        return None
    return tokens[:limit], 1 + position


@torch.no_grad()
def mlm_scores(model, inputs: Sequence[Tuple[List[int], int]], pad: int,
               batch_size: int = 64) -> List[torch.Tensor]:
    """The LM logits (V,) at the mask of every input, computed in batches (right-padded)."""
    out: List[torch.Tensor] = []
    device = next(model.parameters()).device
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        width = max(len(t) for t, _ in chunk)
        src = torch.full((len(chunk), width), pad, dtype=torch.long)
        where = torch.zeros_like(src, dtype=torch.bool)
        for row, (tokens, pos) in enumerate(chunk):
            src[row, :len(tokens)] = torch.tensor(tokens)
            where[row, pos] = True
        logits, _ = model(src.to(device), features_only=False, masked_tokens=where.to(device))
        out.extend(logits.float().cpu().unbind(0))
    return out


@dataclass
class SentencePlan:
    """A sentence cut into words, and the candidates of its replaceable words."""
    words: List[Word]
    candidates: Dict[int, List[Word]]


def plan_sentences(model, sentences: Sequence[torch.Tensor], dictionary, vocab: WordVocab,
                   top_k: int, mode: str = "with-original", batch_size: int = 64
                   ) -> List[SentencePlan]:
    """Words and candidate sets of ``sentences`` (token ids as stored, ``</s>`` last).

    Single-piece replaceable words: :func:`qbert.augment.core.top_k_candidates` of the
    MLM logits at their masked position; multi-piece ones:
    :func:`qbert.augment.core.nearest_neighbours` in the input embedding table. An empty
    candidate set becomes the word itself (TinyBERT).
    """
    if mode not in MLM_INPUTS:
        raise ConfigError(f"--mlm-input must be one of {', '.join(MLM_INPUTS)}, got {mode!r}")
    limit = max_positions(model)
    embedding = model.encoder.sentence_encoder.embed_tokens.weight.detach()
    plans: List[SentencePlan] = []
    requests: List[Tuple[int, int]] = []  # (plan index, word index)
    inputs: List[Tuple[List[int], int]] = []
    for tokens in sentences:
        ids = [int(t) for t in tokens]
        body = ids[:-1] if ids and ids[-1] == dictionary.eos() else ids
        spans = word_spans([bool(vocab.word_start[t]) for t in body])
        words = split_words(body, spans)
        plan = SentencePlan(words, {})
        for w, (s, e) in enumerate(spans):
            word = words[w]
            if not is_replaceable(vocab.text(word)):
                continue
            allowed = vocab.allowed_first if w == 0 else vocab.allowed_inner
            if e - s == 1:
                request = mlm_input(body, s, dictionary, mode, limit)
                if request is None:
                    plan.candidates[w] = [word]
                    continue
                requests.append((len(plans), w))
                inputs.append(request)
            else:
                query = embedding[list(word)].mean(dim=0)
                found = nearest_neighbours(embedding, query, top_k, allowed)
                plan.candidates[w] = [(c,) for c in found] or [word]
        plans.append(plan)
    scores = mlm_scores(model, inputs, dictionary.pad(), batch_size)
    for (p, w), row in zip(requests, scores):
        allowed = vocab.allowed_first if w == 0 else vocab.allowed_inner
        found = top_k_candidates(row, top_k, allowed)
        plans[p].candidates[w] = [(c,) for c in found] or [plans[p].words[w]]
    return plans
