"""``qbert-calibrate``: post-training quantization of fine-tuned fairseq RoBERTa checkpoints
(:mod:`fairseq_qbert.calib.ptq` the library side, :mod:`fairseq_qbert.calib.cli` the command)."""
