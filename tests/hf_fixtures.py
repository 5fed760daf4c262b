"""Tiny Hugging Face RoBERTa/BERT models made locally (no hub), and both sides' logits.

Tokenizers are trained on mini-GLUE sentences with the ``tokenizers`` library; models are
randomly initialised from a config (2 x 64) with every parameter perturbed, so LayerNorm
gains, biases and RoBERTa's token-type row are all non-trivial, then ``save_pretrained``.
"""
import json
import os

import torch

from qbert.hf.compat import import_transformers

DIM, LAYERS, HEADS, FFN, MAX_LEN = 64, 2, 4, 128, 64




def hf_config(arch="RobertaForSequenceClassification", **over):
    family = "bert" if arch.startswith("Bert") else "roberta"
    cfg = {"architectures": [arch], "model_type": family, "vocab_size": 30, "hidden_size": 8,
           "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
           "max_position_embeddings": 18 if family == "roberta" else 16,
           "type_vocab_size": 1 if family == "roberta" else 2,
           "layer_norm_eps": 1e-5 if family == "roberta" else 1e-12, "pad_token_id": 1,
           "id2label": {"0": "neg", "1": "pos", "2": "neutral"}}
    cfg.update(over)
    return cfg


def glue_sentences(glue_dir, task, column, limit=400):
    from conftest import read_tsv

    rows = read_tsv(os.path.join(glue_dir, task, "train.tsv"))[1:]
    # fairseq's GLUE recipe strips each line before BPE (HF would keep a trailing space as a token)
    return [r[column].strip() for r in rows[:limit]]


def roberta_tokenizer(corpus, vocab_size=400):
    import tokenizers

    T = import_transformers()
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return T.RobertaTokenizer(vocab=model["vocab"], merges=merges)


def bert_tokenizer(corpus, vocab_size=300):
    import tokenizers

    T = import_transformers()
    wp = tokenizers.BertWordPieceTokenizer(lowercase=True)
    # specials not at BERT's usual ids, to exercise the id reordering
    wp.train_from_iterator(corpus, vocab_size=vocab_size, show_progress=False,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return T.BertTokenizer(vocab=wp.get_vocab(), do_lower_case=True)


def make_hf_model(out_dir, family, arch, tokenizer, num_labels=2, seed=0, layers=LAYERS, dim=DIM,
                  heads=HEADS, ffn=FFN, eps=None):
    """Save a perturbed random HF model + its tokenizer to ``out_dir``; returns the model."""
    T = import_transformers()
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, num_labels=num_labels)
    if num_labels == 1:
        common["problem_type"] = "regression"
    if eps is not None:
        common["layer_norm_eps"] = eps
    if family == "roberta":
        config = T.RobertaConfig(max_position_embeddings=MAX_LEN + 2, type_vocab_size=1, pad_token_id=1,
                                 bos_token_id=0, eos_token_id=2, **common)
    else:
        config = T.BertConfig(max_position_embeddings=MAX_LEN, type_vocab_size=2,
                              pad_token_id=tokenizer.pad_token_id, **common)
    model = getattr(T, arch)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def hf_logits(hf_dir, first, second=None, arch="AutoModelForSequenceClassification"):
    """Logits of the HF folder on raw text through its own tokenizer."""
    T = import_transformers()
    tok = T.AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    model = getattr(T, arch).from_pretrained(hf_dir, local_files_only=True).eval()
    enc = tok(first, second, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def fairseq_tokens(import_dir, first, second=None):
    """Token ids as qbert-preprocess-glue + fairseq's sentence_prediction make them."""
    from fairseq.data import Dictionary

    from fairseq_qbert.data.preprocess_glue import tokenize_lines

    meta = json.load(open(os.path.join(import_dir, "hf_import.json")))
    bert = meta["family"] == "bert"
    d = Dictionary.load(os.path.join(import_dir, "dict.txt"))
    d.add_symbol("<mask>")

    def encode(lines):
        if bert:
            toks = tokenize_lines(lines, "wordpiece", vocab_txt=os.path.join(import_dir, "vocab.txt"))
        else:
            toks = tokenize_lines(lines, "gpt2", os.path.join(import_dir, "encoder.json"),
                                  os.path.join(import_dir, "vocab.bpe"))
        return [d.encode_line(t, append_eos=True, add_if_not_exist=False).long() for t in toks]

    rows = [torch.cat([torch.tensor([0]), a]) for a in encode(first)]  # --init-token 0
    if second is not None:
        sep = [] if bert else [torch.tensor([2])]  # RoBERTa: --separator-token 2
        rows = [torch.cat([r, *sep, b]) for r, b in zip(rows, encode(second), strict=True)]
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), d.pad(), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, len(d)


def fairseq_model(checkpoint):
    """The checkpoint loaded by fairseq's loader and rebuilt from its own arguments (eval mode)."""
    import fairseq_qbert  # noqa: F401  (registers quant_roberta / quant_bert)
    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu
    from fairseq_qbert.models.quant_roberta import QuantRobertaModel
    from fairseq_qbert.models.standalone import DictionaryOnlyTask
    from qbert.checkpoint_state import head_shapes, model_args

    state = load_checkpoint_to_cpu(checkpoint)
    sd, args = state["model"], model_args(state, checkpoint)
    args.arch = args._name = getattr(args, "arch", None) or "quant_roberta"
    vocab = sd["encoder.sentence_encoder.embed_tokens.weight"].size(0)
    model = QuantRobertaModel.build_checked_model(args, DictionaryOnlyTask(vocab, getattr(args, "max_positions", 512)))
    for name, (classes, inner) in head_shapes(sd).items():
        model.register_classification_head(name, num_classes=classes, inner_dim=inner)
    model.load_checked_state_dict(dict(sd), strict=True, model_cfg=None)
    return model.eval()


def fairseq_logits(import_dir, first, second=None, head="sentence_classification_head", checkpoint=None):
    tokens, vocab = fairseq_tokens(import_dir, first, second)
    model = fairseq_model(checkpoint or os.path.join(import_dir, "model.pt"))
    assert model.encoder.sentence_encoder.embed_tokens.num_embeddings == vocab
    with torch.no_grad():
        if head is None:
            return model(tokens)[0]
        return model(tokens, features_only=True, classification_head_name=head)[0]
