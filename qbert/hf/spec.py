"""The shape of a RoBERTa/BERT encoder, and its translation to/from HF and fairseq configs.

:class:`ModelSpec` is the one description both converters work from. ``from_hf_config``
reads an HF ``config.json`` dict (refusing what fairseq's encoder cannot compute the same
way), ``to_fairseq_args`` writes the model/task arguments stored in the fairseq checkpoint,
``from_fairseq_args`` reads them back (export), ``to_hf_config`` writes ``config.json``.
"""
import dataclasses
from argparse import Namespace
from typing import Any, Dict, List, Optional

from qbert.errors import CheckpointError, ConfigError

#: HF architecture -> (family, what it holds besides the encoder)
SUPPORTED_ARCHITECTURES: Dict[str, tuple] = {
    "RobertaForSequenceClassification": ("roberta", "classifier"),
    "RobertaForMaskedLM": ("roberta", "lm_head"),
    "RobertaModel": ("roberta", "encoder"),
    "BertForSequenceClassification": ("bert", "classifier"),
    "BertModel": ("bert", "encoder"),
}
HEAD_NAME = "sentence_classification_head"
#: HF hidden_act -> fairseq activation_fn (same function)
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_accurate", "tanh": "tanh"}
FAIRSEQ_EPS = 1e-5  # fairseq's LayerNorm epsilon


def fairseq_arch(spec: "ModelSpec") -> str:
    """Arch written into imported checkpoints: fairseq's own ``roberta`` when it computes the
    same function, else ``quant_roberta`` (``--layer-norm-eps``) / ``quant_bert_base``."""
    if spec.family == "bert":
        return "quant_bert_base"
    return "roberta" if abs(spec.layer_norm_eps - FAIRSEQ_EPS) < 1e-12 else "quant_roberta"


def train_flags(spec: "ModelSpec") -> List[str]:
    """fairseq-train flags that give the imported model's shape and input layout."""
    arch = fairseq_arch(spec)
    flags = ["--arch", "quant_roberta" if arch == "roberta" else arch,
             "--encoder-layers", str(spec.layers), "--encoder-embed-dim", str(spec.dim),
             "--encoder-ffn-embed-dim", str(spec.ffn_dim), "--encoder-attention-heads", str(spec.heads),
             "--max-positions", str(spec.fairseq_max_positions), "--init-token", "0"]
    if spec.family == "roberta":
        flags += ["--separator-token", "2"]
    if abs(spec.layer_norm_eps - (1e-12 if spec.family == "bert" else FAIRSEQ_EPS)) > 1e-15:
        flags += ["--layer-norm-eps", repr(spec.layer_norm_eps)]
    if spec.num_labels:
        flags += ["--num-classes", str(spec.num_labels)] + (["--regression-target"] if spec.regression else [])
    return flags
ROBERTA_PAD = 1  # fairseq's padding index; RoBERTa positions start at padding_idx + 1


@dataclasses.dataclass
class ModelSpec:
    family: str  # "roberta" | "bert"
    architecture: str
    layers: int
    dim: int
    ffn_dim: int
    heads: int
    vocab_size: int
    hf_positions: int  # rows of HF's position table
    type_vocab_size: int
    layer_norm_eps: float
    activation: str  # fairseq name
    num_labels: int = 0  # 0: no classification head
    regression: bool = False
    lm_head: bool = False
    id2label: Optional[Dict[str, str]] = None

    @property
    def fairseq_max_positions(self) -> int:
        """fairseq's --max-positions: RoBERTa's table has padding_idx + 1 extra rows."""
        return self.hf_positions - (ROBERTA_PAD + 1 if self.family == "roberta" else 0)

    @property
    def kind(self) -> str:
        return SUPPORTED_ARCHITECTURES[self.architecture][1]


def _require(cfg: Dict[str, Any], key: str, source: str):
    if key not in cfg:
        raise ConfigError(f"{source}: config.json has no '{key}'")
    return cfg[key]


def architecture_of(cfg: Dict[str, Any], source: str) -> str:
    archs = cfg.get("architectures") or []
    if not archs:
        model_type = cfg.get("model_type")
        guess = {"roberta": "RobertaModel", "bert": "BertModel"}.get(model_type)
        if guess is None:
            raise ConfigError(f"{source}: config.json names no architecture (model_type {model_type!r}); "
                              f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        return guess
    arch = archs[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(f"{source}: unsupported architecture {arch!r}; supported: "
                          f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    return arch


def from_hf_config(cfg: Dict[str, Any], source: str = "HF config") -> ModelSpec:
    """Read an HF config.json dict; ConfigError for what fairseq's encoder cannot reproduce."""
    arch = architecture_of(cfg, source)
    family, kind = SUPPORTED_ARCHITECTURES[arch]
    act = cfg.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConfigError(f"{source}: hidden_act {act!r} has no fairseq equivalent; supported: "
                          f"{', '.join(ACTIVATIONS)}")
    pos_type = cfg.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
        raise ConfigError(f"{source}: position_embedding_type {pos_type!r} is not supported (absolute only)")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise ConfigError(f"{source}: decoder / cross-attention models are not supported")
    eps = float(cfg.get("layer_norm_eps", 1e-12 if family == "bert" else 1e-5))
    if family == "roberta":
        if cfg.get("pad_token_id", ROBERTA_PAD) != ROBERTA_PAD:
            raise ConfigError(f"{source}: RoBERTa pad_token_id must be {ROBERTA_PAD} (fairseq's padding "
                              f"index, which positions are counted from), got {cfg.get('pad_token_id')}")
    dim = int(_require(cfg, "hidden_size", source))
    heads = int(_require(cfg, "num_attention_heads", source))
    if dim % heads:
        raise ConfigError(f"{source}: hidden_size {dim} is not a multiple of num_attention_heads {heads}")
    num_labels = 0
    regression = False
    if kind == "classifier":
        id2label = cfg.get("id2label") or {}
        num_labels = int(cfg.get("num_labels", len(id2label) or 2))
        regression = cfg.get("problem_type") == "regression" or num_labels == 1
    return ModelSpec(
        family=family, architecture=arch, layers=int(_require(cfg, "num_hidden_layers", source)), dim=dim,
        ffn_dim=int(_require(cfg, "intermediate_size", source)), heads=heads,
        vocab_size=int(_require(cfg, "vocab_size", source)),
        hf_positions=int(_require(cfg, "max_position_embeddings", source)),
        type_vocab_size=int(cfg.get("type_vocab_size", 2)), layer_norm_eps=eps, activation=ACTIVATIONS[act],
        num_labels=num_labels, regression=regression, lm_head=kind == "lm_head",
        id2label={str(k): v for k, v in (cfg.get("id2label") or {}).items()} if num_labels else None)


def to_fairseq_args(spec: ModelSpec, head_name: str = HEAD_NAME) -> Namespace:
    """The ``args`` of the fairseq checkpoint (as roberta.base's model.pt stores them)."""
    max_positions = spec.fairseq_max_positions
    arch = fairseq_arch(spec)
    args = Namespace(
        arch=arch, _name=arch,
        encoder_layers=spec.layers, encoder_embed_dim=spec.dim, encoder_ffn_embed_dim=spec.ffn_dim,
        encoder_attention_heads=spec.heads, activation_fn=spec.activation, pooler_activation_fn="tanh",
        max_positions=max_positions, max_source_positions=max_positions, max_target_positions=max_positions,
        tokens_per_sample=max_positions, untie_weights_roberta=False, encoder_normalize_before=False,
        encoder_learned_pos=True, layernorm_embedding=True, no_scale_embedding=True,
        dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, pooler_dropout=0.0,
        classification_head_name=head_name, criterion="sentence_prediction" if spec.num_labels else "masked_lm",
        task="sentence_prediction" if spec.num_labels else "masked_lm", data="",
        num_classes=spec.num_labels or 2, regression_target=spec.regression,
        init_token=0, separator_token=None if spec.family == "bert" else 2,
        seed=1, optimizer="adam", lr_scheduler="fixed", lr=[1e-5],
        hf_architecture=spec.architecture,
    )
    if arch != "roberta":
        args.layer_norm_eps = spec.layer_norm_eps
    if spec.family == "bert":
        args.encoder_layout = "bert"
        args.type_vocab_size = spec.type_vocab_size
    return args


def _get(args, name, default=None):
    if isinstance(args, dict):
        return args.get(name, default)
    return getattr(args, name, default)


def from_fairseq_args(args, state_dict: Dict[str, Any], head_name: str, source: str) -> ModelSpec:
    """The spec of a fairseq RoBERTa/BERT checkpoint (shapes from its state dict)."""
    prefix = "encoder.sentence_encoder."
    try:
        emb = state_dict[prefix + "embed_tokens.weight"]
        positions = state_dict[prefix + "embed_positions.weight"]
    except KeyError as e:
        raise CheckpointError(f"{source}: not a RoBERTa-family checkpoint (no {e.args[0]})") from None
    layers = len({k.split(".")[3] for k in state_dict if k.startswith(prefix + "layers.")})
    ffn = state_dict[prefix + "layers.0.fc1.weight"].size(0) if layers else 4 * emb.size(1)
    family = "bert" if _get(args, "encoder_layout") == "bert" else "roberta"
    heads = _get(args, "encoder_attention_heads")
    if not heads:
        raise CheckpointError(f"{source}: its arguments give no encoder_attention_heads")
    num_labels, regression = 0, False
    head_key = f"classification_heads.{head_name}.out_proj.weight"
    if head_key in state_dict:
        num_labels = state_dict[head_key].size(0)
        regression = bool(_get(args, "regression_target", False)) or num_labels == 1
    elif family == "bert" or not any(k.startswith("encoder.lm_head.") for k in state_dict):
        have = sorted({k.split(".")[1] for k in state_dict if k.startswith("classification_heads.")})
        raise CheckpointError(f"{source}: no classification head '{head_name}' (it has: "
                              f"{', '.join(have) or 'none'}); see --head-name")
    act = _get(args, "activation_fn", "gelu")
    hf_act = {v: k for k, v in ACTIVATIONS.items()}.get(act)
    if hf_act is None:
        raise CheckpointError(f"{source}: activation {act!r} has no HF equivalent")
    arch = ("RobertaForSequenceClassification" if family == "roberta" else "BertForSequenceClassification") \
        if num_labels else "RobertaForMaskedLM"
    return ModelSpec(
        family=family, architecture=arch, layers=layers, dim=emb.size(1), ffn_dim=ffn, heads=int(heads),
        vocab_size=emb.size(0), hf_positions=positions.size(0),
        type_vocab_size=int(_get(args, "type_vocab_size", 2)) if family == "bert" else 1,
        layer_norm_eps=float(_get(args, "layer_norm_eps", None) or (1e-12 if family == "bert" else FAIRSEQ_EPS)),
        activation=act, num_labels=num_labels, regression=regression, lm_head=not num_labels)


def to_hf_config(spec: ModelSpec, special_ids: Dict[str, int], extra: Optional[Dict[str, Any]] = None
                 ) -> Dict[str, Any]:
    """config.json of the exported model (``special_ids``: pad/bos/eos token ids)."""
    hf_act = {v: k for k, v in ACTIVATIONS.items()}[spec.activation]
    cfg: Dict[str, Any] = {
        "architectures": [spec.architecture], "model_type": spec.family,
        "vocab_size": spec.vocab_size, "hidden_size": spec.dim, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "intermediate_size": spec.ffn_dim, "hidden_act": hf_act,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": spec.hf_positions, "type_vocab_size": spec.type_vocab_size,
        "initializer_range": 0.02, "layer_norm_eps": spec.layer_norm_eps,
        "position_embedding_type": "absolute", **special_ids,
    }
    if spec.num_labels:
        labels = spec.id2label or {str(i): f"LABEL_{i}" for i in range(spec.num_labels)}
        cfg.update(num_labels=spec.num_labels, id2label=labels, label2id={v: int(k) for k, v in labels.items()},
                   problem_type="regression" if spec.regression else "single_label_classification")
    if extra:
        cfg.update(extra)
    return cfg
