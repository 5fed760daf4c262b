"""The ONNX graph of an export, built directly with ``onnx.helper`` (no tracing).

Input ``src_tokens`` (int64, batch x length, fairseq's token ids, any padding with the
padding index); output ``logits`` (fp32, batch x outputs). What each Linear becomes:

* weights and input quantized: the input is clipped to its grid (only when the grid is
  narrower than uint8's 256 codes: restricted [-127, 127] grids, fewer bits), quantized by
  ``QuantizeLinear`` to uint8 with the *trained* scale (signed grids with zero point 128:
  exact; ORT rounds half to even after a true division, like ``torch.round(x / s)``), and
  multiplied by the int8 weight codes in ``MatMulIntegerToFloat`` (com.microsoft), which
  also applies both scales and the bias. uint8 x int8 is ORT's fast integer GEMM; int8 x
  int8 is about 50x slower, and ``MatMulInteger`` + Cast + Mul or a QDQ MatMul (whose bias
  Add ORT fuses with GELU into a slow ``BiasGelu``) are never used.
* weights quantized, input FP (weight-only groups): ``exact`` -- a fp32 MatMul with the
  dequantized weights (the grid values themselves) or, with ``nbits``, ``MatMulNBits``
  (accuracy level 0: dequantizes to fp32; any K, padded to its block size); ``fast`` --
  ``DynamicQuantizeMatMul`` (int8 weight codes, activations quantized to uint8 per batch:
  not exact).
* full precision: fp32 MatMul + Add.

2:4-sparse weights go in dense (zeros where pruned): ORT's CPU provider has no 2:4 kernel.

RoBERTa's positions are a ``CumSum`` of the non-padding mask plus the padding index;
BERT's (``family`` "bert") are 0..T-1, and its token-type (segment) ids are derived from
the tokens as ``quant_bert`` does -- 0 up to and including the first eos ([SEP]), 1 after
-- so the graph's only input stays ``src_tokens``.

Attention is the contrib op ``MultiHeadAttention`` (fp32 softmax; the q/k/v projections
before it keep their own input grids). Position ids are a ``CumSum`` of the non-padding
mask (BERT: of ones), so every shape stays inferable and ORT's LayerNorm fusions apply.
Quantized embeddings are int8 tables: Gather then ``DequantizeLinear`` (per-tensor scale) or a Mul
by the gathered row scales (per-row scale).
"""
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qbert.errors import ConfigError

from .format import ExportedModel, QuantInput, QuantWeight
from .length import length_selection
from .torch_model import ENCODER, head_prefix

MS = "com.microsoft"
OPSET = 17
MODES = ("exact", "fast")
NBITS_BITS = (2, 4, 8)  # MatMulNBits' CPU kernels; 3-bit codes go to the 4-bit format


def nbits_block_size(k: int) -> int:
    """MatMulNBits' block size for K inputs: min(128, smallest power of two >= max(K, 16))."""
    block = 16
    while block < 128 and block < k:
        block *= 2
    return block


class Graph:
    """Nodes and initializers with unique names."""

    def __init__(self):
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self._count: Dict[str, int] = {}

    def name(self, hint: str) -> str:
        n = self._count.get(hint, 0)
        self._count[hint] = n + 1
        return hint if n == 0 else f"{hint}_{n}"

    def const(self, hint: str, value) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs, hint: Optional[str] = None, domain: str = "", **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, domain=domain or None,
                                           **attrs))
        return out


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


class OnnxBuilder:
    def __init__(self, export: ExportedModel, mode: str = "exact", nbits: bool = False):
        if mode not in MODES:
            raise ConfigError(f"ONNX mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.export = export
        self.arch = export.arch
        self.mode = mode
        self.nbits = nbits
        self.g = Graph()
        self.length = length_selection(self.arch)  # a length configuration (qbert.export.length)
        for key in ("activation_fn", "pooler_activation_fn"):
            if self.arch[key] not in ("gelu", "relu", "tanh"):
                raise ConfigError(f"{key} {self.arch[key]!r}: the ONNX export supports gelu, relu, tanh")

    # ------------------------------------------------------------ pieces
    def activation(self, x: str, name: str) -> str:
        if name == "gelu":
            return self.g.op("Gelu", [x], domain=MS)
        return self.g.op({"relu": "Relu", "tanh": "Tanh"}[name], [x])

    def layer_norm(self, x: str, name: str) -> str:
        e = self.export
        return self.g.op("LayerNormalization", [x, self.g.const(name + ".weight", _f32(e.weight(name + ".weight"))),
                                                self.g.const(name + ".bias", _f32(e.weight(name + ".bias")))],
                         hint=name, axis=-1, epsilon=float(self.arch["layer_norm_eps"]))

    def _quantize_input(self, x: str, name: str, q: QuantInput):
        """(uint8 tensor, scale, zero point) of the input on its trained grid."""
        g = self.g
        scale = np.float32(q.scale.reshape(()).item())
        zp = 128 if q.signed else 0
        lo, hi = q.qmin + zp, q.qmax + zp
        if lo > 0 or hi < 255:  # ORT saturates to [0, 255]: clip to a narrower grid first
            if not 0 <= lo < hi <= 255:
                raise ConfigError(f"{name}: activation grid [{q.qmin}, {q.qmax}] does not fit uint8")
            x = g.op("Clip", [x, g.const(name + ".clip_min", _f32(np.float32(q.qmin) * scale)),
                              g.const(name + ".clip_max", _f32(np.float32(q.qmax) * scale))], hint=name + ".clip")
        s = g.const(name + ".input_scale", _f32(scale))
        z = g.const(name + ".input_zero_point", np.asarray(zp, dtype=np.uint8))
        return g.op("QuantizeLinear", [x, s, z], hint=name + ".quantize"), s, z

    def _weight_scale(self, name: str, w: QuantWeight) -> str:
        s = w.scale.reshape(-1).numpy().astype(np.float32)
        return self.g.const(name + ".weight_scale", s if w.per_channel else s.reshape(()))

    def _codes_t(self, w: QuantWeight) -> np.ndarray:
        return np.ascontiguousarray(w.codes.numpy().astype(np.int8).T)  # [K, N]

    def linear(self, x: str, name: str) -> str:
        e, g = self.export, self.g
        bias = g.const(name + ".bias", _f32(e.weight(name + ".bias")))
        w = e.weights.get(name + ".weight")
        q = e.inputs.get(name)
        if w is not None and q is not None:
            xq, s, z = self._quantize_input(x, name, q)
            codes = g.const(name + ".weight_codes", self._codes_t(w))
            return g.op("MatMulIntegerToFloat", [xq, codes, s, self._weight_scale(name, w), z, "", bias],
                        hint=name, domain=MS)
        if w is not None and self.mode == "fast":
            codes = g.const(name + ".weight_codes", self._codes_t(w))
            return g.op("DynamicQuantizeMatMul", [x, codes, self._weight_scale(name, w), "", bias],
                        hint=name, domain=MS)
        if w is not None and self.nbits:
            return self._matmul_nbits(x, name, w, bias)
        weight = g.const(name + ".weight", np.ascontiguousarray(_f32(e.weight(name + ".weight")).T))
        return g.op("Add", [g.op("MatMul", [x, weight], hint=name + ".matmul"), bias], hint=name)

    def _matmul_nbits(self, x: str, name: str, w: QuantWeight, bias: str) -> str:
        """MatMulNBits at accuracy level 0 (dequantizes to fp32: exact) for any K.

        ORT's layout: B uint8 [N, ceil(K / bs), bs * bits / 8], codes ``q + 2^(bits-1)``
        packed low bits first along K; scales [N, ceil(K / bs)]; the block size bs a power of
        two >= 16. K need not be a multiple of bs: the codes are padded with 0 (dequantized
        0.0) to ``ceil(K / bs) * bs`` and only A's K columns are read. Every block of a row
        gets the row's (or the tensor's) scale. bs = min(128, the smallest power of two >=
        max(K, 16)): one block for small K, 128 (ORT's default) for roberta-base's 768/3072.
        """
        from . import packing

        n, k = w.codes.shape
        bits = next(b for b in NBITS_BITS if b >= w.bits)
        block = nbits_block_size(k)
        blocks = -(-k // block)
        codes = np.zeros((n, blocks * block), dtype=np.int8)
        codes[:, :k] = w.codes.numpy()
        packed = packing.pack(codes, bits, 2 ** (bits - 1)).reshape(n, blocks, block * bits // 8)
        scales = np.broadcast_to(w.scale.reshape(-1, 1).numpy(), (n, blocks)).astype(np.float32)
        return self.g.op("MatMulNBits", [x, self.g.const(name + ".weight_packed", packed),
                                         self.g.const(name + ".weight_scales", np.ascontiguousarray(scales)),
                                         "", "", bias],
                         hint=name, domain=MS, K=k, N=n, bits=bits, block_size=block, accuracy_level=0)

    def embedding(self, ids: str, name: str) -> str:
        e, g = self.export, self.g
        w = e.weights.get(name)
        if w is None:
            return g.op("Gather", [g.const(name, _f32(e.weight(name))), ids], hint=name + ".gather")
        codes = g.op("Gather", [g.const(name + ".codes", w.codes.numpy().astype(np.int8)), ids],
                     hint=name + ".gather")
        if not w.per_channel:
            return g.op("DequantizeLinear", [codes, g.const(name + ".scale", _f32(w.scale.reshape(()))),
                                             g.const(name + ".zero_point", np.asarray(0, dtype=np.int8))],
                        hint=name + ".dequantize")
        scales = g.op("Gather", [g.const(name + ".scale", _f32(w.scale.reshape(-1, 1))), ids],
                      hint=name + ".gather_scale")
        return g.op("Mul", [g.op("Cast", [codes], to=TensorProto.FLOAT), scales], hint=name + ".dequantize")

    def bert_embeddings(self, x: str, ids: str, axis1: str) -> str:
        """x + P[t] + T[s_t]: absolute positions t = 0..T-1 (a CumSum of ones minus 1, so the
        shape stays inferable) and segment ids s_t = min(1, CumSum(eos)_t - eos_t)."""
        g = self.g
        one = g.const("one", np.asarray(1, np.int64))
        ones = g.op("Cast", [g.op("Equal", [ids, ids])], hint="ones", to=TensorProto.INT64)
        positions = g.op("Sub", [g.op("CumSum", [ones, axis1]), one], hint="positions")
        eos = g.const("eos_idx", np.asarray(int(self.arch["eos_idx"]), np.int64))
        is_eos = g.op("Cast", [g.op("Equal", [ids, eos])], hint="is_eos", to=TensorProto.INT64)
        segments = g.op("Min", [g.op("Sub", [g.op("CumSum", [is_eos, axis1]), is_eos]), one], hint="segments")
        x = g.op("Add", [x, self.embedding(positions, ENCODER + "embed_positions.weight")], hint="add_positions")
        return g.op("Add", [x, self.embedding(segments, ENCODER + "embed_token_types.weight")], hint="embeddings")

    # ------------------------------------------------------------ model
    def encoder_layer(self, x: str, prefix: str, mask: str) -> Tuple[str, str]:
        """(output, key padding mask for the next layer: changed by a length configuration)."""
        g, arch = self.g, self.arch
        residual = x
        if arch["normalize_before"]:
            x = self.layer_norm(x, prefix + "self_attn_layer_norm")
        attn = prefix + "self_attn."
        q, k, v = (self.linear(x, attn + p) for p in ("q_proj", "k_proj", "v_proj"))
        head_dim = arch["embed_dim"] // arch["heads"]
        a = g.op("MultiHeadAttention", [q, k, v, "", mask], hint=attn + "mha", domain=MS,
                 num_heads=int(arch["heads"]), scale=float(head_dim ** -0.5))
        x = g.op("Add", [residual, self.linear(a, attn + "out_proj")], hint=prefix + "attn_residual")
        if not arch["normalize_before"]:
            x = self.layer_norm(x, prefix + "self_attn_layer_norm")
        if self.length is not None:  # keep <s> + the top-(k-1) tokens by attention received
            x, mask = self.length.after_attention(self, prefix, x, q, k, mask)
        residual = x
        if arch["normalize_before"]:
            x = self.layer_norm(x, prefix + "final_layer_norm")
        h = self.activation(self.linear(x, prefix + "fc1"), arch["activation_fn"])
        x = g.op("Add", [residual, self.linear(h, prefix + "fc2")], hint=prefix + "ffn_residual")
        if not arch["normalize_before"]:
            x = self.layer_norm(x, prefix + "final_layer_norm")
        return x, mask

    def build(self) -> onnx.ModelProto:
        g, arch = self.g, self.arch
        pad = int(arch["padding_idx"])
        ids = "src_tokens"
        keep = g.op("Cast", [g.op("Not", [g.op("Equal", [ids, g.const("padding_idx", np.asarray(pad, np.int64))])])],
                    hint="not_pad", to=TensorProto.INT64)
        axis1 = g.const("axis1", np.asarray(1, np.int64))
        x = self.embedding(ids, ENCODER + "embed_tokens.weight")
        if float(arch["embed_scale"]) != 1.0:
            x = g.op("Mul", [x, g.const("embed_scale", _f32(arch["embed_scale"]))])
        if arch.get("family", "roberta") == "bert":
            x = self.bert_embeddings(x, ids, axis1)
        else:
            positions = g.op("Add", [g.op("Mul", [g.op("CumSum", [keep, axis1]), keep]),
                                     g.const("position_offset", np.asarray(pad, np.int64))], hint="positions")
            x = g.op("Add", [x, self.embedding(positions, ENCODER + "embed_positions.weight")], hint="embeddings")
        if arch["layernorm_embedding"]:
            x = self.layer_norm(x, ENCODER + "layernorm_embedding")
        keep_f = g.op("Unsqueeze", [g.op("Cast", [keep], to=TensorProto.FLOAT),
                                    g.const("last_axis", np.asarray([-1], np.int64))], hint="keep")
        x = g.op("Mul", [x, keep_f], hint="zero_padding")
        mask = g.op("Cast", [keep], hint="key_padding_mask", to=TensorProto.INT32)
        for i in range(int(arch["layers"])):
            x, mask = self.encoder_layer(x, f"{ENCODER}layers.{i}.", mask)
        if arch["final_layer_norm"]:
            x = self.layer_norm(x, ENCODER + "layer_norm")
        cls = g.op("Gather", [x, g.const("first", np.asarray(0, np.int64))], hint="cls", axis=1)
        head = head_prefix(arch)
        h = self.activation(self.linear(cls, head + "dense"), arch["pooler_activation_fn"])
        logits = self.linear(h, head + "out_proj")
        g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
        graph = helper.make_graph(
            g.nodes, "qbert_roberta",
            [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "length"])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", int(arch["num_classes"])])],
            g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                                  producer_name="qbert-export")
        model.ir_version = 8
        return model


def build_onnx(export: ExportedModel, mode: str = "exact", nbits: bool = False) -> onnx.ModelProto:
    """The ONNX model of ``export`` (see module docstring); ``mode`` "exact" or "fast"."""
    return OnnxBuilder(export, mode, nbits).build()


def save_onnx(model: onnx.ModelProto, path: str) -> None:
    """Write ``model`` (one file; protobuf's 2 GiB limit covers roberta-large in int8)."""
    onnx.save_model(model, path)
