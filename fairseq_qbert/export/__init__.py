"""fairseq side of ``qbert-export``: rebuild a checkpoint's fake-quant model, convert it to
:class:`qbert.export.ExportedModel`, and ``--verify`` it against the ONNX model."""
from .convert import export_checkpoint, load_fake_quant, to_export

__all__ = ["export_checkpoint", "load_fake_quant", "to_export"]
