"""A quantized ``quant_roberta``/``quant_bert`` state dict as a full-precision one whose
quantized weights hold their dequantized grid values (what :func:`qbert.hf.export_hf` writes).

No model is rebuilt (and no fairseq is needed): every ``PREFIX.weight_quantizer.*`` group of
keys is loaded strictly into a fresh quantizer of the checkpoint's kind (``--weight-quantizer``,
``--lsq-per-channel`` in its arguments; bits from the saved ``bits`` buffer), and in eval mode
``PREFIX.weight <- weight_quantizer(PREFIX.weight)`` -- the same values the fake-quant model
computes with. Activation quantizers cannot be expressed in an HF model: the note says which
bits they had.
"""
import logging
from argparse import Namespace
from typing import Any, Dict, Tuple

import torch

from qbert.errors import CheckpointError, QBertError
from qbert.groups import module_group
from qbert.quant.registry import build_quantizer

logger = logging.getLogger(__name__)

WEIGHT_Q = ".weight_quantizer."
INPUT_Q = ".input_quantizer."


def _weight_quantizer(prefix: str, state: Dict[str, torch.Tensor], args: Namespace, path: str):
    """The trained weight quantizer of module ``prefix``, loaded strictly from ``state``."""
    kind = getattr(args, "weight_quantizer", "lsq") or "lsq"
    sub = {k[len(prefix + WEIGHT_Q):]: v for k, v in state.items() if k.startswith(prefix + WEIGHT_Q)}
    rows = state[prefix + ".weight"].size(0)
    per_channel = bool(getattr(args, "lsq_per_channel", False)) and kind == "lsq"
    try:
        quantizer = build_quantizer(kind, int(sub["bits"]), signed=True, per_channel=per_channel,
                                    num_channels=rows if per_channel else 1)
        quantizer.load_state_dict(sub, strict=True)
    except (QBertError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot restore the weight quantizer of '{prefix}' "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
                              ) from None
    return quantizer.eval()


def dequantize(state_dict: Dict[str, torch.Tensor], args: Namespace, path: str, head_name: str
               ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(FP state dict with dequantized weights, note for config.json)."""
    prefixes = sorted(k[:-len(WEIGHT_Q + "bits")] for k in state_dict if k.endswith(WEIGHT_Q + "bits"))
    fp = {k: v for k, v in state_dict.items() if WEIGHT_Q not in k and INPUT_Q not in k}
    with torch.no_grad():
        for prefix in prefixes:
            weight = state_dict[prefix + ".weight"]
            quantizer = _weight_quantizer(prefix, state_dict, args, path)
            fp[prefix + ".weight"] = quantizer(weight.float()).to(weight.dtype)
    act_bits = int(getattr(args, "act_bits", 0) or 0)
    note = {"quantized": True, "weight_quantizer": getattr(args, "weight_quantizer", "lsq"),
            "group_bits": {module_group(p): int(state_dict[p + WEIGHT_Q + "bits"]) for p in prefixes},
            "act_bits": act_bits,
            "act_quantizer": (getattr(args, "act_quantizer", None) or "lsq") if act_bits else None,
            "dequantized_modules": len(prefixes),
            "note": "weights hold their dequantized grid values; activation quantization "
                    "(act_bits) is not applied by this HF model"}
    logger.info("dequantized %d weights of %s", len(prefixes), path)
    return fp, note
