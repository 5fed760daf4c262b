"""A fairseq ``quant_roberta`` / ``roberta`` checkpoint -> :class:`qbert.export.ExportedModel`.

The model is rebuilt from the checkpoint's own arguments (:func:`rebuild`: its quantizers,
bits and groups as trained, state loaded strictly, eval mode);
every module with a weight quantizer contributes its integer codes and scale
(``Quantizer.integer_codes`` / ``qparams``), every input quantizer its grid, everything
else (LayerNorms, biases, FP groups) its fp32 tensor. A plain FP ``roberta`` checkpoint
has no quantizers: it exports unquantized (the baseline).
"""
import os
from typing import Any, Dict, Optional, Tuple

from qbert.checkpoint_state import first_line, head_shapes, model_args
from qbert.errors import CheckpointError, ConfigError, QBertError
from qbert.export import ExportedModel, QuantInput, QuantWeight, write_export
from qbert.export.format import DICT, LABELS
from qbert.quant.base import Quantizer

HEAD_NAME = "sentence_classification_head"
ENCODER = "encoder.sentence_encoder."


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The checkpoint dict, read by the plugin's restricted loader."""
    from fairseq_qbert.checkpoint_loading import load_checkpoint_to_cpu

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = load_checkpoint_to_cpu(path)
    except QBertError:
        raise
    except Exception as e:  # noqa: BLE001 - not a torch file, truncated, ...
        raise CheckpointError(f"{path}: cannot read it as a fairseq checkpoint ({first_line(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return state


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
    if (getattr(args, "encoder_layout", None) or "roberta") != "roberta":
        raise CheckpointError(f"{path}: encoder layout '{args.encoder_layout}' is not exported (RoBERTa only)")
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
    if not isinstance(encoder.embed_positions, LearnedPositionalEmbedding):
        raise ConfigError("only learned positional embeddings are exported (RoBERTa's)")
    head = model.classification_heads[head_name]
    args = model.args
    return {
        "family": "roberta", "layers": len(encoder.layers), "embed_dim": encoder.embed_tokens.embedding_dim,
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
    for key, value in model.state_dict().items():
        if not key.startswith(keep) or "_quantizer." in key:
            continue
        module_name, _, param = key.rpartition(".")
        quantizer = getattr(modules.get(module_name), "weight_quantizer", None)
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


def export_checkpoint(checkpoint: str, out_dir: str, head_name: Optional[str] = None, force: bool = False,
                      fast: bool = False, nbits: bool = False, data_dir: Optional[str] = None,
                      bpe: str = "whitespace", encoder_json: Optional[str] = None,
                      vocab_bpe: Optional[str] = None) -> Tuple[str, ExportedModel, Any, Dict[str, Any]]:
    """Write the export folder of ``checkpoint``; returns (out_dir, export, fake-quant model,
    checkpoint dict)."""
    from qbert.export.format import check_out_dir
    from qbert.export.predict import BPE_CHOICES

    check_out_dir(out_dir, force)
    if bpe not in BPE_CHOICES:
        raise ConfigError(f"--bpe {bpe}: unknown; allowed: {', '.join(BPE_CHOICES)}")
    if bpe == "gpt2" and not (encoder_json and vocab_bpe):
        raise ConfigError("--bpe gpt2 needs --encoder-json and --vocab-bpe (GPT-2 BPE files)")
    for flag, path in (("--encoder-json", encoder_json), ("--vocab-bpe", vocab_bpe)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{flag} {path}: no such file")
    model, state, head_name = load_fake_quant(checkpoint, head_name)
    export = to_export(model, head_name, _regression(state))
    data = data_files(data_dir or checkpoint_data_dir(state))
    extra = {}
    files: Dict[str, Any] = {"bpe": bpe, "num_inputs": data.get("num_inputs", 1)}
    if data:
        extra[DICT] = data["dict"]
        files["dictionary"] = DICT
        if data["labels"] and not export.arch["regression"]:
            extra[LABELS] = data["labels"]
            files["labels"] = LABELS
    if bpe == "gpt2":
        extra["encoder.json"], extra["vocab.bpe"] = encoder_json, vocab_bpe
        files.update(encoder_json="encoder.json", vocab_bpe="vocab.bpe")
    export.files = files
    write_export(export, out_dir, force=force, mode="fast" if fast else "exact", nbits=nbits,
                 extra_files=extra)
    return out_dir, export, model, state
