"""Parameter maps between HF RoBERTa/BERT and fairseq's RoBERTa (``quant_roberta``/``quant_bert``).

One table (:func:`parameter_pairs`) lists (fairseq key, HF key) for every tensor copied as
is; :func:`hf_to_fairseq` and :func:`fairseq_to_hf` walk it in opposite directions and add
what is not a plain copy:

* vocabulary rows: fairseq's dictionary puts its four specials (bos, pad, eos, unk) at
  0..3; ``order[j]`` is the HF id of fairseq index ``j`` (identity for RoBERTa), applied to
  the token embeddings and the LM head's bias;
* RoBERTa's token-type embedding (one row, added by HF to every token) is folded into every
  row of the position table (fairseq has no token types); exported as zero;
* BERT's token types map to ``embed_token_types`` of ``quant_bert``;
* RoBERTa's LM head decoder is tied to the token embeddings on both sides.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from qbert.errors import CheckpointError

from .spec import ModelSpec

FS = "encoder.sentence_encoder."
HEADS = "classification_heads."

_LAYER = (  # fairseq (under layers.i.) -> HF (under encoder.layer.i.)
    ("self_attn.q_proj", "attention.self.query"),
    ("self_attn.k_proj", "attention.self.key"),
    ("self_attn.v_proj", "attention.self.value"),
    ("self_attn.out_proj", "attention.output.dense"),
    ("self_attn_layer_norm", "attention.output.LayerNorm"),
    ("fc1", "intermediate.dense"),
    ("fc2", "output.dense"),
    ("final_layer_norm", "output.LayerNorm"),
)


def hf_prefix(spec: ModelSpec) -> str:
    """Prefix of the encoder's keys in the HF model (bare ``RobertaModel``/``BertModel``: none)."""
    return "" if spec.kind == "encoder" else spec.family + "."


def _wb(fs: str, hf: str) -> List[Tuple[str, str]]:
    return [(f"{fs}.weight", f"{hf}.weight"), (f"{fs}.bias", f"{hf}.bias")]


def parameter_pairs(spec: ModelSpec, head_name: str) -> List[Tuple[str, str]]:
    """(fairseq key, HF key) of every tensor both sides hold with the same value and shape."""
    p = hf_prefix(spec)
    pairs = _wb(FS + "layernorm_embedding", p + "embeddings.LayerNorm")
    if spec.family == "bert":
        pairs += [(FS + "embed_positions.weight", p + "embeddings.position_embeddings.weight"),
                  (FS + "embed_token_types.weight", p + "embeddings.token_type_embeddings.weight")]
    for i in range(spec.layers):
        for fs, hf in _LAYER:
            pairs += _wb(f"{FS}layers.{i}.{fs}", f"{p}encoder.layer.{i}.{hf}")
    if spec.num_labels:
        head = f"{HEADS}{head_name}"
        if spec.family == "roberta":
            pairs += _wb(head + ".dense", "classifier.dense") + _wb(head + ".out_proj", "classifier.out_proj")
        else:
            pairs += _wb(head + ".dense", p + "pooler.dense") + _wb(head + ".out_proj", "classifier")
    if spec.lm_head:
        pairs += _wb("encoder.lm_head.dense", "lm_head.dense") + _wb("encoder.lm_head.layer_norm", "lm_head.layer_norm")
    return pairs


def expected_hf_shapes(spec: ModelSpec, head_name: str = "h") -> Dict[str, Tuple[int, ...]]:
    """Shape of every HF tensor the import reads, from the config alone."""
    d, f = spec.dim, spec.ffn_dim
    shapes: Dict[str, Tuple[int, ...]] = {}
    for fs, hf in parameter_pairs(spec, head_name):
        leaf = fs.rsplit(".", 1)
        module, kind = leaf[0], leaf[1]
        if module.endswith("fc1"):
            shape = (f, d) if kind == "weight" else (f,)
        elif module.endswith("fc2"):
            shape = (d, f) if kind == "weight" else (d,)
        elif module.endswith("out_proj") and module.startswith(HEADS):
            shape = (spec.num_labels, d) if kind == "weight" else (spec.num_labels,)
        elif module.endswith("embed_positions"):
            shape = (spec.hf_positions, d)
        elif module.endswith("embed_token_types"):
            shape = (spec.type_vocab_size, d)
        elif "norm" in module:
            shape = (d,)
        else:
            shape = (d, d) if kind == "weight" else (d,)
        shapes[hf] = shape
    p = hf_prefix(spec)
    shapes[p + "embeddings.word_embeddings.weight"] = (spec.vocab_size, d)
    if spec.family == "roberta":
        shapes[p + "embeddings.position_embeddings.weight"] = (spec.hf_positions, d)
        shapes[p + "embeddings.token_type_embeddings.weight"] = (spec.type_vocab_size, d)
    if spec.lm_head:
        shapes["lm_head.bias"] = (spec.vocab_size,)
    return shapes


def check_hf_state_dict(hf: Dict[str, torch.Tensor], spec: ModelSpec, source: str) -> None:
    """CheckpointError naming the first tensor that is missing or has another shape than config.json says."""
    for key, shape in expected_hf_shapes(spec).items():
        if key not in hf:
            raise CheckpointError(f"{source}: the weights have no '{key}', which config.json "
                                  f"({spec.architecture}, {spec.layers} layers) needs")
        if tuple(hf[key].shape) != shape:
            raise CheckpointError(f"{source}: '{key}' has shape {tuple(hf[key].shape)} but config.json "
                                  f"implies {shape}; config and weights do not match")


def hf_to_fairseq(hf: Dict[str, torch.Tensor], spec: ModelSpec, order: Sequence[int],
                  head_name: str) -> Dict[str, torch.Tensor]:
    """fairseq state dict (RobertaModel keys) of an HF state dict (checked by check_hf_state_dict)."""
    p = hf_prefix(spec)
    rows = torch.as_tensor(list(order), dtype=torch.long)
    out = {fs: hf[key].detach().clone().float() for fs, key in parameter_pairs(spec, head_name)}
    embed = hf[p + "embeddings.word_embeddings.weight"].float()[rows].clone()
    out[FS + "embed_tokens.weight"] = embed
    if spec.family == "roberta":
        positions = hf[p + "embeddings.position_embeddings.weight"].float()
        token_type = hf[p + "embeddings.token_type_embeddings.weight"].float()[0]
        out[FS + "embed_positions.weight"] = (positions + token_type).clone()
    if spec.lm_head:
        out["encoder.lm_head.weight"] = embed  # tied, as fairseq's RobertaLMHead
        out["encoder.lm_head.bias"] = hf["lm_head.bias"].float()[rows].clone()
    else:  # fairseq's RobertaModel always has an LM head: tied to the embeddings, neutral rest
        out.update(blank_lm_head(embed))
    return out


def blank_lm_head(embed: torch.Tensor) -> Dict[str, torch.Tensor]:
    """An LM head for models imported without one (unused by classification)."""
    vocab, dim = embed.shape
    return {"encoder.lm_head.dense.weight": torch.eye(dim), "encoder.lm_head.dense.bias": torch.zeros(dim),
            "encoder.lm_head.layer_norm.weight": torch.ones(dim),
            "encoder.lm_head.layer_norm.bias": torch.zeros(dim),
            "encoder.lm_head.weight": embed, "encoder.lm_head.bias": torch.zeros(vocab)}


def fairseq_to_hf(fs: Dict[str, torch.Tensor], spec: ModelSpec, head_name: str,
                  order: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
    """HF state dict of a fairseq one. ``order`` (fairseq index -> HF id) defaults to identity:
    the exported model then uses fairseq's ids, and its tokenizer must too."""
    p = hf_prefix(spec)
    missing = [k for k, _ in parameter_pairs(spec, head_name) if k not in fs]
    if FS + "embed_tokens.weight" not in fs:
        missing.insert(0, FS + "embed_tokens.weight")
    if missing:
        raise CheckpointError(f"the checkpoint has no '{missing[0]}' (and {len(missing) - 1} more "
                              f"missing tensors) for a {spec.family} encoder of {spec.layers} layers")
    out = {key: fs[k].detach().clone().float().contiguous() for k, key in parameter_pairs(spec, head_name)}
    embed = fs[FS + "embed_tokens.weight"].float()
    inverse = None
    if order is not None:
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.as_tensor(list(order), dtype=torch.long)] = torch.arange(len(order))
        embed = embed[inverse]
    out[p + "embeddings.word_embeddings.weight"] = embed.clone().contiguous()
    if spec.family == "roberta":
        out[p + "embeddings.position_embeddings.weight"] = fs[FS + "embed_positions.weight"].float().clone()
        out[p + "embeddings.token_type_embeddings.weight"] = torch.zeros(1, spec.dim)
    if spec.lm_head:
        bias = fs["encoder.lm_head.bias"].float()
        out["lm_head.bias"] = (bias[inverse] if inverse is not None else bias).clone()
        out["lm_head.decoder.weight"] = out[p + "embeddings.word_embeddings.weight"]
    return out
