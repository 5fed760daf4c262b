"""fairseq-qbert: a fairseq ``--user-dir`` for quantization-aware fine-tuning of RoBERTa.

Importing this package (fairseq does it for ``--user-dir fairseq_qbert``) registers
the ``quant_roberta`` model family and the ``kd_sentence_prediction`` criterion.
"""
import atexit
import os

# fairseq checkpoints are pickles holding argparse.Namespace / DictConfig objects.
# torch >= 2.6 refuses them with weights_only=True (the new default), both in
# checkpoint_utils.load_checkpoint_to_cpu and in the DDP object broadcast.
# Only load checkpoints you trust (see README).
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

from . import models  # noqa: E402,F401  (registers quant_roberta)
from . import criterions  # noqa: E402,F401  (registers kd_sentence_prediction)


def _destroy_process_group_at_exit():
    """fairseq never destroys its process group; with gloo on CPU a worker then sometimes
    aborts at interpreter shutdown ("terminate called without an active exception")
    after training finished. Tear it down cleanly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_destroy_process_group_at_exit)
