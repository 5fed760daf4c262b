"""A length configuration baked into the ONNX export (QuaLA inference).

``qbert-export --length-config "(l_1,...,l_N)"`` (or a checkpoint saved with one) records the
configuration in ``config.json`` (``arch["length_config"]``) and the graph reproduces the
fairseq model's token selection (:mod:`fairseq_qbert.models.length_adaptive`,
:mod:`qbert.lat.selection`): after layer ``i``'s attention block (attention, residual,
LayerNorm) it keeps ``<s>`` and the ``l_i - 1`` tokens that received the most attention and
runs the FFN and every later layer on those only; the classification head reads ``<s>``.

In the graph, a layer that can drop tokens (``l_i`` below the maximum positions and below
``l_{i-1}``: any other layer's input is never longer than ``l_i``) gets, next to its
``MultiHeadAttention`` (which does not return probabilities):

* significance: ``softmax(q * d_head^-1/2 . k^T)`` per head with ``-inf`` at padded keys
  (MatMul, Where, Softmax), averaged over heads (ReduceMean), padded queries zeroed (Mul),
  summed over queries (ReduceSum) -- PoWER-BERT's ``sum_h sum_i A[h, i, j]``, as
  ``QuantMultiheadAttention`` computes it; padded keys then score ``-inf``;
* selection: ``k = min(l_i, T)``; ``TopK`` of the ``k - 1`` best among positions 1..T-1
  (ties: the lower position, ONNX's rule; torch's ``topk`` leaves ties unspecified, which
  matters only among padding positions, whose choice changes nothing), position 0
  prepended, the ``k`` positions sorted
  (``TopK`` smallest-first on the indices: the tokens keep their order), then ``GatherND``
  of the hidden states and ``GatherElements`` of the padding mask, which the following
  layers' attention (and significance) use.

When ``k >= T`` (a batch shorter than ``l_i``) the selection is the identity, so nothing
changes, as in the fairseq model; a configuration that never drops a token (every ``l_i`` at
the maximum positions) adds no node: its graph is the plain model's.
"""
import re
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from onnx import TensorProto

from qbert.lat.config import check_length_config, parse_length_config

#: the key of ``config.json``'s ``arch`` that holds the configuration (a list, one per layer)
ARCH_KEY = "length_config"
FLAG = "--length-config"
_LAYER = re.compile(r"layers\.(\d+)\.$")


def set_length_config(export, config, flag: str = FLAG) -> Optional[Tuple[int, ...]]:
    """Validate ``config`` (text, sequence or None) against ``export``'s architecture (one
    value per layer, non-increasing, 1..max positions; one-line ``ConfigError`` naming
    ``flag``) and record it in ``export.arch`` (None clears it). Returns the tuple or None."""
    arch = export.arch
    value = parse_length_config(config, int(arch["layers"]), int(arch["max_positions"]), flag)
    if value is None:
        arch.pop(ARCH_KEY, None)
    else:
        arch[ARCH_KEY] = list(value)
    return value


def arch_length_config(arch) -> Optional[Tuple[int, ...]]:
    """The configuration recorded in ``arch`` (checked), or None."""
    value = arch.get(ARCH_KEY)
    if value is None:
        return None
    return check_length_config(value, int(arch["layers"]), int(arch["max_positions"]),
                               f"config.json arch.{ARCH_KEY}")


def reducing_layers(config: Optional[Sequence[int]], max_positions: int) -> Dict[int, int]:
    """{layer index: tokens kept} of the layers that can drop tokens: ``l_i`` below the
    maximum positions and below the previous layer's ``l_{i-1}``."""
    out: Dict[int, int] = {}
    previous = int(max_positions)
    for i, keep in enumerate(config or ()):
        if int(keep) < previous:
            out[i] = int(keep)
        previous = min(previous, int(keep))
    return out


class LengthSelection:
    """The selection nodes of one ONNX graph (see module docstring)."""

    def __init__(self, arch):
        self.arch = arch
        self.config = arch_length_config(arch)
        self.keep = reducing_layers(self.config, int(arch["max_positions"]))
        self._shared: Dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.keep)

    def layer_keep(self, prefix: str) -> Optional[int]:
        match = _LAYER.search(prefix)
        return None if match is None else self.keep.get(int(match.group(1)))

    def _constants(self, g, heads: int, head_dim: int) -> Dict[str, str]:
        """The graph's constants of the selection, made once and shared by every layer."""
        if not self._shared:
            values = {"split_heads": np.asarray([0, 0, heads, head_dim], np.int64),
                      "scaling": np.float32(head_dim ** -0.5), "zero_i32": np.asarray(0, np.int32),
                      "neg_inf": np.float32(-np.inf), "axes_1_2": np.asarray([1, 2], np.int64),
                      "axes_1": np.asarray([1], np.int64), "axes_last": np.asarray([-1], np.int64),
                      "one": np.asarray([1], np.int64),
                      "int64_max": np.asarray([np.iinfo(np.int64).max], np.int64)}
            self._shared = {name: g.const("length." + name, v) for name, v in values.items()}
        return self._shared

    def after_attention(self, builder, prefix: str, x: str, q: str, k: str, mask: str) -> Tuple[str, str]:
        """(hidden states, key padding mask) after layer ``prefix``'s selection: ``x`` is the
        attention block's output (B x T x C), ``q``/``k`` its query/key projections (before
        scaling), ``mask`` the int32 B x T non-padding mask (1 = token)."""
        keep = self.layer_keep(prefix)
        if keep is None:
            return x, mask
        g, arch = builder.g, self.arch
        heads = int(arch["heads"])
        head_dim = int(arch["embed_dim"]) // heads
        c = self._constants(g, heads, head_dim)
        p = prefix + "length."
        qh = g.op("Transpose", [g.op("Reshape", [g.op("Mul", [q, c["scaling"]], hint=p + "q_scaled"),
                                                 c["split_heads"]], hint=p + "q_heads")],
                  hint=p + "q_t", perm=[0, 2, 1, 3])                                  # B H T d
        kh = g.op("Transpose", [g.op("Reshape", [k, c["split_heads"]], hint=p + "k_heads")],
                  hint=p + "k_t", perm=[0, 2, 3, 1])                                  # B H d S
        pad = g.op("Equal", [mask, c["zero_i32"]], hint=p + "pad")                   # B S
        neg_inf = c["neg_inf"]
        scores = g.op("Where", [g.op("Unsqueeze", [pad, c["axes_1_2"]],
                                     hint=p + "pad_keys"), neg_inf,
                                g.op("MatMul", [qh, kh], hint=p + "scores")], hint=p + "masked_scores")
        probs = g.op("Softmax", [scores], hint=p + "probs", axis=-1)                 # B H T S
        mean = g.op("ReduceMean", [probs], hint=p + "head_mean", axes=[1], keepdims=0)   # B T S
        queries = g.op("Unsqueeze", [g.op("Cast", [mask], hint=p + "real", to=TensorProto.FLOAT),
                                     c["axes_last"]], hint=p + "real_queries")
        received = g.op("ReduceSum", [g.op("Mul", [mean, queries], hint=p + "voting"),
                                      c["axes_1"]],
                        hint=p + "significance", keepdims=0)                          # B S
        ranked = g.op("Where", [pad, neg_inf, received], hint=p + "ranked")
        others = g.op("Slice", [ranked, c["one"],
                                c["int64_max"],
                                c["axes_1"]], hint=p + "others")
        length = g.op("Shape", [mask], hint=p + "length", start=1, end=2)             # [T]
        kept_n = g.op("Min", [length, g.const(p + "keep", np.asarray([keep], np.int64))], hint=p + "k")
        top = g.name(p + "top")
        top_idx = g.name(p + "top_index")
        g.nodes.append(_node("TopK", [others, g.op("Sub", [kept_n, c["one"]], hint=p + "k_others")],
                             [top, top_idx], top, axis=-1, largest=1, sorted=1))
        rows = g.op("Concat", [g.op("Shape", [mask], hint=p + "batch", start=0, end=1), c["one"]],
                    hint=p + "first_shape", axis=0)
        first = g.op("ConstantOfShape", [rows], hint=p + "first", value=_tensor_i64(0))
        positions = g.op("Concat", [first, g.op("Add", [top_idx, c["one"]], hint=p + "top_positions")],
                         hint=p + "unsorted", axis=1)
        kept = g.name(p + "kept")
        g.nodes.append(_node("TopK", [positions, kept_n], [kept, g.name(p + "kept_order")], kept,
                             axis=-1, largest=0, sorted=1))                           # B k, ascending
        x = g.op("GatherND", [x, g.op("Unsqueeze", [kept, c["axes_last"]], hint=p + "kept_nd")],
                 hint=p + "select", batch_dims=1)                                     # B k C
        mask = g.op("GatherElements", [mask, kept], hint=p + "mask", axis=1)          # B k
        return x, mask


def _node(op_type, inputs, outputs, name, **attrs):
    from onnx import helper

    return helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs)


def _tensor_i64(value: int):
    from onnx import helper

    return helper.make_tensor("value", TensorProto.INT64, [1], [int(value)])


def length_selection(arch) -> Optional[LengthSelection]:
    """The selection of ``arch``'s configuration, or None when it never drops a token."""
    selection = LengthSelection(arch)
    return selection if selection else None


def torch_layer(layer, x, padding_mask, keep: int):
    """``qbert.export.torch_model.ExportLayer.forward`` (T x B x C) with the selection between
    the attention block and the FFN, as fairseq_qbert's ``layer_forward``:
    ``(x, padding mask)`` of the kept tokens (unchanged when ``keep >= T``)."""
    from qbert.lat.selection import select_tokens, significance
    from qbert.nn.attention import self_attention

    residual = x
    if layer.normalize_before:
        x = layer.self_attn_layer_norm(x)
    attn, _, probs = self_attention(x, layer.q_proj, layer.k_proj, layer.v_proj, layer.heads,
                                    layer.scaling, key_padding_mask=padding_mask)
    x = residual + layer.out_proj(attn)
    if not layer.normalize_before:
        x = layer.self_attn_layer_norm(x)
    if keep < x.size(0):
        tgt, bsz = x.size(0), x.size(1)
        probs = probs.view(bsz, layer.heads, tgt, tgt).transpose(1, 0).mean(dim=0)  # as fairseq
        kept = select_tokens(significance(probs, padding_mask), keep, padding_mask)
        x = x.gather(0, kept.t().unsqueeze(-1).expand(-1, -1, x.size(-1)))
        if padding_mask is not None:
            padding_mask = padding_mask.gather(1, kept)
    residual = x
    if layer.normalize_before:
        x = layer.final_layer_norm(x)
    x = residual + layer.fc2(layer.activation_fn(layer.fc1(x)))
    if not layer.normalize_before:
        x = layer.final_layer_norm(x)
    return x, padding_mask


def with_length_config(export, config):
    """A shallow copy of ``export`` (tensors shared) with ``config`` recorded instead."""
    import dataclasses

    copy = dataclasses.replace(export, arch=dict(export.arch))
    set_length_config(copy, config)
    return copy


def measure_latency(export, config, batches: Sequence, threads: Optional[int] = 1, repeats: int = 3,
                    mode: str = "exact") -> Dict[str, float]:
    """Latency of ``export``'s ONNX graph with ``config`` baked in, on ONNX Runtime (CPU):
    ``batches`` (int64 token arrays) run once to warm up, then ``repeats`` times;
    ``{"latency_ms": median ms per sentence, "onnx_mb": graph size}``."""
    import time

    from .onnx_graph import build_onnx
    from .runtime import create_session

    proto = build_onnx(with_length_config(export, config), mode).SerializeToString()
    session = create_session(proto, threads)
    feeds = [{"src_tokens": np.ascontiguousarray(np.asarray(b, dtype=np.int64))} for b in batches]
    sentences = sum(int(f["src_tokens"].shape[0]) for f in feeds)
    if not sentences:
        raise ValueError("measure_latency: no sentences")
    for feed in feeds:
        session.run(["logits"], feed)
    times = []
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        for feed in feeds:
            session.run(["logits"], feed)
        times.append(time.perf_counter() - start)
    return {"latency_ms": 1000.0 * float(np.median(times)) / sentences, "onnx_mb": len(proto) / 1e6}
