"""HF ``save_pretrained`` folder -> fairseq checkpoint (``qbert-import-hf``)."""
import json
import logging
import os
from typing import Dict, Optional

import torch

from qbert.errors import DataError

from . import hfio, maps, vocab
from . import spec as specs
from .compat import import_transformers

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "hf_tokenizer"
METADATA = "hf_import.json"


def load_tokenizer(hf_dir: str, source: Optional[str] = None):
    """The folder's transformers tokenizer (local files only); DataError when it has none."""
    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{source or hf_dir}: cannot load its tokenizer ({first}); the folder needs the "
                        "tokenizer files save_pretrained writes") from None


def checkpoint_state(args, model: Dict[str, torch.Tensor], criterion: str) -> Dict:
    """A fairseq checkpoint dict (the layout of roberta.base's model.pt): tensors, plain
    containers and an argparse.Namespace only."""
    return {
        "args": args,
        "model": model,
        "optimizer_history": [{"criterion_name": criterion, "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True}},
        "last_optimizer_state": None,
    }


def import_hf(hf_dir: str, out_dir: str, head_name: str = specs.HEAD_NAME) -> str:
    """Convert the HF RoBERTa/BERT in ``hf_dir`` into ``out_dir`` (which must not exist).

    Writes ``model.pt`` (fairseq checkpoint), ``dict.txt``, the tokenization files
    (RoBERTa: ``encoder.json`` + ``vocab.bpe``; BERT: ``vocab.txt``), ``hf_tokenizer/``
    (the HF tokenizer in fairseq's id order, for export) and ``hf_import.json``.
    Raises ConfigError / DataError / CheckpointError (one line) before writing anything.
    """
    hfio.check_new_dir(out_dir)
    cfg = hfio.read_config(hf_dir)
    spec = specs.from_hf_config(cfg, hf_dir)
    weights = hfio.read_weights(hf_dir)
    maps.check_hf_state_dict(weights, spec, hf_dir)
    tokenizer = load_tokenizer(hf_dir)
    special = vocab.special_ids(tokenizer, spec.family, hf_dir)
    order = vocab.fairseq_order(spec.vocab_size, special, hf_dir)
    state_dict = maps.hf_to_fairseq(weights, spec, order, head_name)
    args = specs.to_fairseq_args(spec, head_name)
    criterion = "SentencePredictionCriterion" if spec.num_labels else "MaskedLmLoss"

    with hfio.staged_dir(out_dir) as tmp:
        tok_dir = os.path.join(tmp, TOKENIZER_DIR)
        if spec.family == "roberta":
            vocab.write_roberta_files(tmp, tokenizer, order, special, hf_dir)
            tokenizer.save_pretrained(tok_dir)
        else:
            tokens = vocab.write_bert_files(tmp, tokenizer, order, special)
            transformers = import_transformers()
            reordered = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(tokens)},
                                                   **vocab.bert_tokenizer_options(tokenizer))
            reordered.save_pretrained(tok_dir)
        torch.save(checkpoint_state(args, state_dict, criterion), os.path.join(tmp, "model.pt"))
        meta = {"source": os.path.abspath(hf_dir), "architecture": spec.architecture, "family": spec.family,
                "fairseq_arch": args.arch, "head_name": head_name if spec.num_labels else None,
                "num_classes": spec.num_labels, "regression": spec.regression,
                "id_order_is_identity": order == list(range(len(order))),
                "do_lower_case": getattr(tokenizer, "do_lower_case", None),
                "fairseq_train_flags": specs.train_flags(spec)}
        with open(os.path.join(tmp, METADATA), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
    logger.info("imported %s (%s, %d x %d) into %s", hf_dir, spec.architecture, spec.layers, spec.dim, out_dir)
    return out_dir
