"""fairseq RoBERTa/BERT checkpoint -> HF ``save_pretrained`` folder (``qbert-export-hf``).

No fairseq needed. For a ``quant_roberta``/``quant_bert`` result (quantizer state in its
state dict) each quantized weight is replaced by its dequantized grid values
(:mod:`qbert.hf.dequantize`, with the checkpoint's own trained quantizers);
``config.json`` then records the bits and groups under ``qbert_quantization``.
"""
import logging
import os
from argparse import Namespace
from typing import Any, Dict, Optional, Tuple

from qbert.checkpoint_state import is_quantizer_key, model_args, read_checkpoint
from qbert.errors import CheckpointError, ConfigError

from . import hfio, maps
from . import spec as specs
from .compat import import_transformers

logger = logging.getLogger(__name__)

QUANT_NOTE_KEY = "qbert_quantization"


def load_checkpoint(path: str) -> Dict[str, Any]:
    """The checkpoint dict, read with the restricted unpickler (qbert.safe_load)."""
    from qbert.safe_load import safe_load

    return read_checkpoint(path, lambda p: safe_load(p, map_location="cpu", source=p))


def fp_state_dict(state: Dict[str, Any], args: Namespace, path: str, head_name: str
                  ) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(full-precision state dict, quantization note or None)."""
    model = {("encoder." + k[len("decoder."):] if k.startswith("decoder.") else k): v
             for k, v in state["model"].items()}
    if not any(is_quantizer_key(k) for k in model):
        return model, None
    from .dequantize import dequantize

    return dequantize(model, args, path, head_name)


def export_hf(checkpoint: str, out_dir: str, head_name: str = specs.HEAD_NAME,
              tokenizer_dir: Optional[str] = None) -> str:
    """Write the fairseq checkpoint as an HF folder that ``AutoModelForSequenceClassification``
    (or ``AutoModelForMaskedLM`` for a checkpoint without head) loads.

    The exported model uses fairseq's token ids. ``tokenizer_dir``: an HF tokenizer in those
    ids (``qbert-import-hf``'s ``OUT/hf_tokenizer``) copied next to the model.
    """
    hfio.check_new_dir(out_dir)
    if tokenizer_dir is not None and not os.path.isdir(tokenizer_dir):
        raise ConfigError(f"--tokenizer {tokenizer_dir}: no such folder")
    state = load_checkpoint(checkpoint)
    args = model_args(state, checkpoint)
    fp, note = fp_state_dict(state, args, checkpoint, head_name)
    spec = specs.from_fairseq_args(args, fp, head_name, checkpoint)
    hf_state = maps.fairseq_to_hf(fp, spec, head_name)
    extra = {QUANT_NOTE_KEY: note} if note else {QUANT_NOTE_KEY: {"quantized": False}}
    config_dict = specs.to_hf_config(spec, {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}, extra)

    transformers = import_transformers()
    tokenizer = None
    if tokenizer_dir is not None:
        from .importer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir, f"--tokenizer {tokenizer_dir}")
        if len(tokenizer) > spec.vocab_size:
            raise ConfigError(f"--tokenizer {tokenizer_dir} has {len(tokenizer)} tokens but the model only "
                              f"{spec.vocab_size} rows; give the tokenizer the model was trained with")
    config = transformers.AutoConfig.for_model(spec.family, **{k: v for k, v in config_dict.items()
                                                               if k != "model_type"})
    model = getattr(transformers, spec.architecture)(config)
    result = model.load_state_dict(hf_state, strict=False)
    tied = {"lm_head.decoder.weight", "lm_head.decoder.bias"}
    missing = [k for k in result.missing_keys if k not in tied and not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise CheckpointError(f"{checkpoint}: the HF {spec.architecture} does not match the converted weights "
                              f"({'missing' if missing else 'unexpected'} '{bad}')")
    model.eval()
    with hfio.staged_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    logger.info("exported %s as %s to %s", checkpoint, spec.architecture, out_dir)
    return out_dir


