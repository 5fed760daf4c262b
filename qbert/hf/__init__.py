"""Hugging Face ``transformers`` interop: RoBERTa/BERT folders to fairseq checkpoints and back.

Public entry points::

    from qbert.hf import import_hf, export_hf
    import_hf("my-hf-model/", "imported/")            # imported/model.pt, dict.txt, ...
    export_hf("checkpoint_best.pt", "hf-out/", tokenizer_dir="imported/hf_tokenizer")

Fairseq-free (torch, safetensors; ``transformers``/``tokenizers`` imported lazily, from
the ``hf`` extra). A *quantized* checkpoint's weights are replaced by their dequantized
grid values with the quantizers of :mod:`qbert.quant` (:mod:`qbert.hf.dequantize`).
"""
from .exporter import export_hf
from .importer import import_hf
from .spec import HEAD_NAME, SUPPORTED_ARCHITECTURES

__all__ = ["import_hf", "export_hf", "HEAD_NAME", "SUPPORTED_ARCHITECTURES"]
