"""qbert: the fairseq-free core of fairseq-qbert.

Everything here imports with torch (and the standard library) only, never fairseq:
quantizer math and quantizer parameters (:mod:`qbert.quant`), the layer-group table
(:mod:`qbert.groups`), library errors (:mod:`qbert.errors`), the mini-GLUE data tools
(:mod:`qbert.data`) and the experiment runner and tables (:mod:`qbert.experiments`).
The fairseq side (models, criterions, ``--user-dir``) lives in :mod:`fairseq_qbert`,
which builds on this package; nothing here imports :mod:`fairseq_qbert`.
"""
