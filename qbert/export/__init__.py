"""Real integer models from QAT checkpoints (fairseq-free part of ``qbert-export``).

* :mod:`.packing`: bit-packing of integer codes (2, 3, 4, 8 bits);
* :mod:`.format`: the export folder (``model.safetensors`` + ``config.json``), reader/writer;
* :mod:`.torch_model`: a pure-torch rebuild of encoder + head (logits equal the fake-quant model's);
* :mod:`.onnx_graph`: the ONNX Runtime graph (integer GEMMs with the trained scales);
* :mod:`.runtime`: ORT sessions with the right options;
* :mod:`.predict`: ``qbert-predict`` (ONNX Runtime + numpy + the tokenizer only).

The names below are loaded on first use, so ``qbert.export.predict`` imports neither torch
nor onnx. The fairseq side (reading a checkpoint, ``--verify``) is ``fairseq_qbert.export``.
"""
import importlib

_API = {
    "ExportedModel": "format", "QuantInput": "format", "QuantWeight": "format", "load": "format",
    "read_config": "format", "staged_dir": "format", "write_export": "writer",
    "build_onnx": "onnx_graph", "save_onnx": "onnx_graph", "pack": "packing", "unpack": "packing",
    "OnnxClassifier": "runtime", "create_session": "runtime", "build_torch_model": "torch_model",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
