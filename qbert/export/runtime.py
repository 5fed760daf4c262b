"""ONNX Runtime sessions for exported models, with the options the integer graph needs.

``SkipLayerNormFusion`` is disabled: on this kind of CPU ORT's SkipLayerNormalization
kernel is several times slower than the Add + LayerNormalization it replaces (measured:
2.96 ms vs 0.65 ms on 1024 x 768). Everything else runs at ORT's full optimization level.
"""
import os
from typing import Optional

import numpy as np

from qbert.errors import DataError

from .format import ONNX, read_config

DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def create_session(model_path: str, threads: Optional[int] = None,
                   optimized_model_path: Optional[str] = None):
    """An ``onnxruntime.InferenceSession`` on CPU (``threads``: intra-op threads, default ORT's;
    ``optimized_model_path``: where ORT writes the graph it actually runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if optimized_model_path:
        options.optimized_model_filepath = optimized_model_path
    return ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=DISABLED_OPTIMIZERS)


class OnnxClassifier:
    """The ONNX model of an export folder: ``logits(src_tokens)`` with numpy in and out."""

    def __init__(self, export_dir: str, threads: Optional[int] = None):
        self.config = read_config(export_dir)
        path = os.path.join(export_dir, ONNX)
        if not os.path.isfile(path):
            raise DataError(f"{export_dir}: no {ONNX}; is it a qbert-export output folder?")
        self.session = create_session(path, threads)

    def logits(self, src_tokens) -> np.ndarray:
        tokens = np.ascontiguousarray(np.asarray(src_tokens, dtype=np.int64))
        return self.session.run(["logits"], {"src_tokens": tokens})[0]
