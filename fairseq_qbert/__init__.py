"""fairseq-qbert: a fairseq ``--user-dir`` for quantization-aware fine-tuning of RoBERTa.

Importing this package (fairseq does it for ``--user-dir fairseq_qbert``) registers
the ``quant_roberta`` model family, the ``kd_sentence_prediction`` criterion and the
``sentence_prediction_aug`` task (augmented rows for KD, see :mod:`fairseq_qbert.augment`).
"""
import atexit

from . import (
    augment,  # noqa: F401  (registers sentence_prediction_aug)
    checkpoint_loading,
    criterions,  # noqa: F401  (registers kd_sentence_prediction)
    models,  # noqa: F401  (registers quant_roberta)
)

# fairseq checkpoints are pickles holding argparse.Namespace (and omegaconf) objects, which
# torch >= 2.6 refuses by default: fairseq's loading goes through qbert.safe_load, with
# exactly these types allowed for its own torch.load calls (see checkpoint_loading).
checkpoint_loading.install()


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
