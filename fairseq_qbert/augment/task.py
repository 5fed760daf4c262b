"""``--task sentence_prediction_aug``: fairseq's ``sentence_prediction`` that also hands the
criterion which rows of a ``qbert-augment`` folder are original.

Everything is fairseq's ``sentence_prediction`` (same flags, same data layout, same
batches); each batch additionally carries ``sample["original"]`` (bool, one per sentence),
read from the folder's ``augment/<split>.original.npy`` by fairseq's row id
(``sample["id"]``). Splits that ``qbert-augment`` did not augment (valid, test), and
folders it did not write, are all original, so the task is a drop-in replacement.
``kd_sentence_prediction`` then applies the ground-truth loss (``--kd-label-weight``) to
original rows only and the KD parts to all rows (TinyBERT/TernaryBERT distil on the
augmented set; the augmented rows' label slot is only a copy of their source row's label).
"""
import logging

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset
from fairseq.tasks import register_task
from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask

from qbert.augment.layout import load_original_flags
from qbert.errors import cli_errors

logger = logging.getLogger(__name__)

ORIGINAL_KEY = "original"


class OriginalFlagDataset(BaseWrapperDataset):
    """Wraps a ``sentence_prediction`` dataset; its batches gain ``sample["original"]``."""

    def __init__(self, dataset, flags: np.ndarray):
        super().__init__(dataset)
        if len(flags) != len(dataset):
            raise ValueError(f"{len(flags)} original flags for {len(dataset)} rows")
        self.flags = np.asarray(flags, dtype=bool)

    def collater(self, samples):
        batch = self.dataset.collater(samples)
        if batch and "id" in batch:
            batch[ORIGINAL_KEY] = torch.from_numpy(self.flags[batch["id"].cpu().numpy()])
        return batch


@register_task("sentence_prediction_aug", dataclass=SentencePredictionConfig)
class SentencePredictionAugTask(SentencePredictionTask):
    """``sentence_prediction`` + per-row original flags of ``qbert-augment`` folders."""

    def load_dataset(self, split, combine=False, **kwargs):
        super().load_dataset(split, combine=combine, **kwargs)
        dataset = self.datasets[split]
        data_dir = self.cfg.data.split(":")[0]
        with cli_errors():
            flags = load_original_flags(data_dir, split, len(dataset))
        if not flags.all():
            logger.info(f"{split}: {int(flags.sum())} original + {int((~flags).sum())} augmented rows "
                        "(ground-truth loss on original rows only)")
        self.datasets[split] = OriginalFlagDataset(dataset, flags)
