"""Reading what a fairseq checkpoint's dict holds (no fairseq import): its model arguments,
its classification heads, which state-dict keys are quantizer state. One place for the KD
teacher, qbert-calibrate, qbert-export and qbert-export-hf."""
import os
from argparse import Namespace
from typing import Any, Callable, Dict, Optional, Tuple

from qbert.errors import CheckpointError, QBertError

HEAD_PREFIX = "classification_heads."


def is_quantizer_key(key: str) -> bool:
    """Whether a state-dict key is a quantizer's state (``...weight_quantizer.*`` / ``...input_quantizer.*``)."""
    return ".weight_quantizer." in key or ".input_quantizer." in key


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (for one-line errors wrapping another exception)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_checkpoint(path: str, load: Callable[[str], Any], source: Optional[str] = None) -> Dict[str, Any]:
    """The checkpoint dict at ``path`` read by ``load`` (a restricted loader: the plugin's
    fairseq loader, or :func:`qbert.safe_load.safe_load`); a missing, unreadable or
    non-fairseq file is a one-line :class:`CheckpointError` starting with ``source`` (e.g.
    ``"--path X"``; default the path). The loader's own refusals pass unchanged, or prefixed
    with ``source`` when one is given."""
    src = source or path
    if not os.path.isfile(path):
        raise CheckpointError(f"{src}: no such checkpoint file")
    try:
        state = load(path)
    except QBertError as e:
        if source is None:
            raise
        raise CheckpointError(f"{source}: {e.message}") from None
    except Exception as e:  # noqa: BLE001 - not a torch file, truncated, ...
        raise CheckpointError(f"{src}: cannot read it as a fairseq checkpoint ({first_line(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{src}: not a fairseq checkpoint (no 'model' state dict)")
    return state


def model_args(state: Dict[str, Any], source: str) -> Namespace:
    """The model arguments of a fairseq checkpoint (``cfg.model``, else the legacy ``args``)
    as a fresh Namespace; ``source`` (e.g. ``"--teacher-path X"``) starts the error message."""
    cfg = state.get("cfg")
    args = cfg.get("model") if cfg is not None and hasattr(cfg, "get") else None
    if args is None:
        args = state.get("args")
    if args is None:
        raise CheckpointError(f"{source}: the checkpoint stores no model arguments "
                              "('cfg.model' or 'args'); is it a fairseq checkpoint?")
    if isinstance(args, Namespace):
        return Namespace(**vars(args))
    if isinstance(args, dict):
        return Namespace(**args)
    try:  # omegaconf DictConfig (hydra-trained checkpoints)
        from omegaconf import OmegaConf

        return Namespace(**OmegaConf.to_container(args, resolve=True))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{source}: unreadable model arguments ({first_line(e)})") from None


def head_shapes(state_dict) -> Dict[str, Tuple[int, int]]:
    """{head name: (num_classes, inner_dim)} of the classification heads in a state dict."""
    heads = {}
    for key, value in state_dict.items():
        if key.startswith(HEAD_PREFIX) and key.endswith(".out_proj.weight"):
            name = key[len(HEAD_PREFIX):-len(".out_proj.weight")]
            dense = state_dict.get(f"{HEAD_PREFIX}{name}.dense.weight")
            heads[name] = (value.size(0), dense.size(0) if dense is not None else value.size(1))
    return heads
