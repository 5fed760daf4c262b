"""TinyBERT data augmentation with a pretrained masked LM (``qbert-augment``) and the
``sentence_prediction_aug`` task that marks original rows (registered on import); the
low-resource ``train<N>`` split of the runner's QAT_TRAIN_SIZE (:mod:`.subset`).

Fairseq-free parts: :mod:`qbert.augment`."""
from . import task  # noqa: F401  (registers sentence_prediction_aug)
