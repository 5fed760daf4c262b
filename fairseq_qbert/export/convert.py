"""A fairseq ``quant_roberta`` / ``roberta`` checkpoint -> :class:`qbert.export.ExportedModel`.

The model is rebuilt from the checkpoint's own arguments (:func:`rebuild`: its quantizers,
bits and groups as trained, state loaded strictly, eval mode);
every module with a weight quantizer contributes its integer codes and scale
(``Quantizer.integer_codes`` / ``qparams``), every input quantizer its grid, everything
else (LayerNorms, biases, FP groups) its fp32 tensor. A 2:4-sparse module (``weight_mask``)
exports ``weight * mask`` -- what its forward quantizes -- and its mask, so the export
stores it compactly. A plain FP ``roberta`` checkpoint has no quantizers: it exports
unquantized (the baseline). BERT-layout checkpoints (``quant_bert*``, encoder layout
"bert") export with ``family`` "bert" (absolute positions, token-type rows).
"""
import os
from typing import Any, Dict, Optional, Tuple

from qbert import checkpoint_state
from qbert.checkpoint_state import first_line, head_shapes, model_args
from qbert.errors import CheckpointError, ConfigError, QBertError
from qbert.export import ExportedModel, QuantInput, QuantWeight, write_export
from qbert.export.format import DICT, LABELS, compact_2to4
from qbert.quant.base import Quantizer
from qbert.sparse import MASK_SUFFIX

HEAD_NAME = "sentence_classification_head"
ENCODER = "encoder.sentence_encoder."
LAYOUTS = ("roberta", "bert")  # quant_roberta's encoder layouts (args.encoder_layout)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The checkpoint dict, read by the plugin's restricted loader."""
    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu

    return checkpoint_state.read_checkpoint(path, load_checkpoint_to_cpu)


def rebuild(state_dict, args, path: str):
    """The checkpoint's own model as ``quant_roberta`` (its quantizers, bits and groups; an
    FP ``roberta`` gets none), every head registered, state loaded strictly, eval mode."""
    import logging
    from argparse import Namespace

    from ..models.quant_roberta import QuantRobertaModel
    from ..models.standalone import DictionaryOnlyTask

    args = Namespace(**vars(args))
    args.arch = args._name = "quant_roberta"
    args.load_checkpoint_heads = False
    for name in ("encoder_layers_to_keep", "checkpoint_activations", "offload_activations"):
        setattr(args, name, None if name == "encoder_layers_to_keep" else False)
    task = DictionaryOnlyTask(state_dict[ENCODER + "embed_tokens.weight"].size(0),
                              getattr(args, "max_positions", 512))
    heads = head_shapes(state_dict)
    log = logging.getLogger(QuantRobertaModel.__module__)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        model = QuantRobertaModel.build_checked_model(args, task)
        for name, (classes, inner) in heads.items():
            model.register_classification_head(name, num_classes=classes, inner_dim=inner)
        model.load_checked_state_dict(dict(state_dict), strict=True, model_cfg=None)
    except QBertError as e:
        raise CheckpointError(f"{path}: {e.message}") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot rebuild the model ({first_line(e)})") from None
    finally:
        log.setLevel(level)
    return model.eval()


def load_fake_quant(path: str, head_name: Optional[str] = None):
    """(fake-quant model in eval mode, checkpoint dict, head name) of a RoBERTa-family
    sentence-prediction checkpoint; one-line CheckpointError otherwise."""
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.models.roberta import RobertaModel


    state = read_checkpoint(path)
    args = model_args(state, path)
    arch = getattr(args, "arch", None) or getattr(args, "_name", None)
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls is None or not issubclass(model_cls, RobertaModel):
        raise CheckpointError(f"{path}: arch '{arch}' is not a RoBERTa-family model (roberta*, quant_roberta*)")
    layout = getattr(args, "encoder_layout", None) or "roberta"
    if layout not in LAYOUTS:
        raise CheckpointError(f"{path}: encoder layout '{layout}' is not exported ({', '.join(LAYOUTS)})")
    state_dict = {("encoder." + k[len("decoder."):] if k.startswith("decoder.") else k): v
                  for k, v in state["model"].items()}
    if ENCODER + "embed_tokens.weight" not in state_dict:
        raise CheckpointError(f"{path}: no '{ENCODER}embed_tokens.weight'; is it a RoBERTa checkpoint?")
    heads = sorted({k.split(".")[1] for k in state_dict if k.startswith("classification_heads.")})
    if not heads:
        raise CheckpointError(f"{path}: no classification head; a sentence-prediction checkpoint "
                              "(fine-tuned with --task sentence_prediction) is needed")
    if head_name is None:
        head_name = HEAD_NAME if HEAD_NAME in heads or len(heads) != 1 else heads[0]
    if head_name not in heads:
        raise ConfigError(f"--head-name {head_name}: the checkpoint has no such classification head "
                          f"(it has: {', '.join(heads)})")
    model = rebuild(state_dict, args, path)
    return model, state, head_name


def _arch(model, head_name: str, regression: bool) -> Dict[str, Any]:
    from fairseq.modules import LearnedPositionalEmbedding

    encoder = model.encoder.sentence_encoder
    layer = encoder.layers[0]
    args = model.args
    family = getattr(args, "encoder_layout", None) or "roberta"
    bert = {}
    if family == "bert":  # absolute positions 0..T-1, token types from the [SEP] layout
        bert = {"type_vocab_size": encoder.embed_token_types.num_embeddings, "eos_idx": int(encoder.eos_idx)}
    elif not isinstance(encoder.embed_positions, LearnedPositionalEmbedding):
        raise ConfigError("only learned positional embeddings are exported (RoBERTa's)")
    head = model.classification_heads[head_name]
    return {
        "family": family, **bert, "layers": len(encoder.layers), "embed_dim": encoder.embed_tokens.embedding_dim,
        "ffn_dim": layer.fc1.out_features, "heads": layer.self_attn.num_heads,
        "vocab_size": encoder.embed_tokens.num_embeddings,
        "positions": encoder.embed_positions.num_embeddings, "max_positions": encoder.max_positions(),
        "padding_idx": encoder.padding_idx, "layer_norm_eps": float(layer.final_layer_norm.eps),
        "activation_fn": getattr(args, "activation_fn", "gelu"),
        "pooler_activation_fn": getattr(args, "pooler_activation_fn", "tanh"),
        "normalize_before": bool(layer.normalize_before),
        "layernorm_embedding": encoder.layernorm_embedding is not None,
        "final_layer_norm": encoder.layer_norm is not None, "embed_scale": float(encoder.embed_scale),
        "head_name": head_name, "num_classes": head.out_proj.out_features,
        "inner_dim": head.dense.out_features, "regression": bool(regression),
    }


def to_export(model, head_name: str, regression: bool = False) -> ExportedModel:
    """The export of a (fake-quant or FP) fairseq RoBERTa in eval mode: encoder + one head."""
    from ..models.quant_config import QuantSettings

    arch = _arch(model, head_name, regression)
    keep = (ENCODER, f"classification_heads.{head_name}.")
    modules = dict(model.named_modules())
    export = ExportedModel(arch=arch)
    lengths = getattr(model.encoder.sentence_encoder, "length_config", None)
    if lengths:  # the model's length configuration, baked into the graph (qbert.export.length)
        export.arch["length_config"] = [int(v) for v in lengths]
    for key, value in model.state_dict().items():
        if not key.startswith(keep) or "_quantizer." in key or key.endswith(MASK_SUFFIX):
            continue
        module_name, _, param = key.rpartition(".")
        module = modules.get(module_name)
        quantizer = getattr(module, "weight_quantizer", None)
        mask = module._buffers.get("weight_mask") if param == "weight" and module is not None else None
        if mask is not None:  # 2:4: the forward uses weight * mask (before the weight quantizer)
            value = value * mask
            if compact_2to4(mask):
                export.masks[key] = mask.detach().clone()
        if param == "weight" and isinstance(quantizer, Quantizer):
            w = value.detach().float()
            export.weights[key] = QuantWeight.from_qparams(quantizer.integer_codes(w), quantizer.qparams(w),
                                                           quantizer.kind)
        else:
            export.fp[key] = value.detach().float().clone()
    for name, module in modules.items():
        q = getattr(module, "input_quantizer", None)
        if name.startswith(keep) and isinstance(q, Quantizer):
            export.inputs[name] = QuantInput.from_qparams(q.qparams(), q.kind)
    quant = getattr(model, "quant", None) or QuantSettings.from_args(model.args)
    export.quantization = {"describe": quant.describe(), "weight_quantizer": quant.weight_quantizer,
                           "group_bits": dict(quant.group_bits), "act_bits": quant.act_bits,
                           "act_quantizer": quant.act_quantizer if quant.act_bits else None,
                           "lsq_per_channel": quant.lsq_per_channel}
    return export.validate()


def _regression(state) -> bool:
    from ..criterions.teacher import _stored_regression_target

    return bool(_stored_regression_target(state))


def data_files(data_dir: Optional[str]) -> Dict[str, Any]:
    """{"dict": path, "labels": path or None, "num_inputs": 1|2} of a binarized DATA-bin."""
    if not data_dir:
        return {}
    src = os.path.join(data_dir, "input0", "dict.txt")
    if not os.path.isfile(src):
        raise ConfigError(f"--data {data_dir}: no input0/dict.txt; give the binarized data folder "
                          "the model was trained on")
    labels = os.path.join(data_dir, "label", "dict.txt")
    return {"dict": src, "labels": labels if os.path.isfile(labels) else None,
            "num_inputs": 2 if os.path.isdir(os.path.join(data_dir, "input1")) else 1}


def checkpoint_data_dir(state) -> Optional[str]:
    """The data folder the checkpoint was trained on, when it still exists."""
    cfg = state.get("cfg")
    data = None
    try:
        data = cfg["task"]["data"] if cfg is not None else None
    except Exception:  # noqa: BLE001
        data = None
    if data is None and state.get("args") is not None:
        data = getattr(state["args"], "data", None)
    return data if data and os.path.isfile(os.path.join(data, "input0", "dict.txt")) else None


def _task_setting(state, name: str, default=None):
    """A ``--task sentence_prediction`` setting of the checkpoint (cfg.task, else args)."""
    cfg = state.get("cfg")
    try:
        task = cfg["task"] if cfg is not None else None
        if task is not None and name in task:
            return task[name]
    except Exception:  # noqa: BLE001 - a cfg without a task
        pass
    return getattr(state.get("args"), name, default) if state.get("args") is not None else default


def framing(state) -> Dict[str, Any]:
    """How sentence_prediction framed the training examples: ``I A </s> [S B </s>]`` with
    I = --init-token, S = --separator-token (None: not added). RoBERTa: I=0, S=2; BERT's
    ``[CLS] A [SEP] B [SEP]``: I=0, no S."""
    out = {}
    for key in ("init_token", "separator_token"):
        value = _task_setting(state, key)
        out[key] = None if value is None else int(value)
    return out


def export_checkpoint(checkpoint: str, out_dir: str, head_name: Optional[str] = None, force: bool = False,
                      fast: bool = False, nbits: bool = False, data_dir: Optional[str] = None,
                      bpe: str = "whitespace", encoder_json: Optional[str] = None,
                      vocab_bpe: Optional[str] = None, vocab: Optional[str] = None,
                      lowercase: bool = True, length_config=None) -> Tuple[str, ExportedModel, Any, Dict[str, Any]]:
    """Write the export folder of ``checkpoint``; returns (out_dir, export, fake-quant model,
    checkpoint dict). ``vocab``/``lowercase``: BERT's vocab.txt for ``bpe="wordpiece"``.
    ``length_config``: None = the checkpoint's own (if it was saved with one), ``"none"`` =
    every token, else the configuration to bake in (``--length-config``; the returned model
    applies it too)."""
    from qbert.export.format import check_out_dir
    from qbert.export.predict import BPE_CHOICES

    check_out_dir(out_dir, force)
    if bpe not in BPE_CHOICES:
        raise ConfigError(f"--bpe {bpe}: unknown; allowed: {', '.join(BPE_CHOICES)}")
    if bpe == "gpt2" and not (encoder_json and vocab_bpe):
        raise ConfigError("--bpe gpt2 needs --encoder-json and --vocab-bpe (GPT-2 BPE files)")
    if bpe == "wordpiece" and not vocab:
        raise ConfigError("--bpe wordpiece needs --vocab (BERT's vocab.txt in fairseq order, as given to "
                          "qbert-preprocess-glue)")
    for flag, path in (("--encoder-json", encoder_json), ("--vocab-bpe", vocab_bpe), ("--vocab", vocab)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{flag} {path}: no such file")
    model, state, head_name = load_fake_quant(checkpoint, head_name)
    if length_config is not None:
        from ..models.length_adaptive import set_length_config

        set_length_config(model, None if str(length_config).strip().lower() in ("", "none") else length_config)
    export = to_export(model, head_name, _regression(state))
    data = data_files(data_dir or checkpoint_data_dir(state))
    extra = {}
    files: Dict[str, Any] = {"bpe": bpe, "num_inputs": data.get("num_inputs", 1), **framing(state)}
    if data:
        extra[DICT] = data["dict"]
        files["dictionary"] = DICT
        if data["labels"] and not export.arch["regression"]:
            extra[LABELS] = data["labels"]
            files["labels"] = LABELS
    if bpe == "gpt2":
        extra["encoder.json"], extra["vocab.bpe"] = encoder_json, vocab_bpe
        files.update(encoder_json="encoder.json", vocab_bpe="vocab.bpe")
    if bpe == "wordpiece":
        extra["vocab.txt"] = vocab
        files.update(vocab="vocab.txt", lowercase=bool(lowercase))
    export.files = files
    write_export(export, out_dir, force=force, mode="fast" if fast else "exact", nbits=nbits,
                 extra_files=extra)
    return out_dir, export, model, state
