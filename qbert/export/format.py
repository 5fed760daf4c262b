"""The export format: ``model.safetensors`` + ``config.json`` (+ dictionaries). No pickle.

``model.safetensors`` holds, under fairseq's parameter names (``encoder.sentence_encoder.
layers.0.fc1.weight``, ...):

* every full-precision tensor as fp32 (LayerNorms, biases, weights of groups left FP);
* every quantized weight ``W`` as ``W.qcodes`` (uint8, its integer codes bit-packed at the
  grid's width, see :mod:`qbert.export.packing`) and ``W.qscale`` (fp32, [1] per tensor or
  [rows, 1] per output row);
* every quantized Linear input ``M`` (a module name) as ``M.input_scale`` (fp32 [1]);
* every 2:4-sparse weight ``W`` (a ``weight_mask`` in the checkpoint) compactly: of each
  group of 4 consecutive input weights of a row only the 2 kept ones are stored, in input
  order -- ``W.qcodes`` then packs the ``rows x in/2`` kept codes, an FP weight becomes
  ``W.sparse_values`` (fp32 ``rows x in/2``) -- plus ``W.sparse_index`` (uint8
  ``rows x in/8``: each group's two positions p0 < p1 in 0..3 as ``p0 | p1 << 2``, two groups
  per byte, low nibble first; :func:`qbert.sparse.pack_2to4`). The dense weight is
  ``W[r, 4g + p] = kept value`` for the group's kept positions, 0 elsewhere: exactly
  ``weight * mask``. Bytes per int8 weight: 0.5 + 1/8 instead of 1; per fp32: 2.125 instead of 4.

``config.json`` holds the architecture (``arch``), the quantization settings as trained
(``quantization``), each quantized weight's grid (``weights``: shape, bits, offset, qmin,
qmax, quantizer) and each activation grid (``activations``: bits, signed, qmin, qmax), and
the files next to it (``files``: dictionary, labels, BPE), and the 2:4-sparse weights
(``sparse``: {name: {"pattern": "2:4", "shape"}}). Dequantized weights are
``codes * scale`` -- exactly the grid values the fake-quant forward computes.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, Tuple

import numpy as np

from qbert.errors import ConfigError, DataError

from . import packing

# torch (and the quantizer reference) are imported where tensors are made: reading
# config.json (qbert-predict) needs neither
if TYPE_CHECKING:  # annotations only
    import torch

    from qbert.quant.qparams import QParams

FORMAT = "qbert-export"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
DICT = "dict.txt"
LABELS = "labels.txt"
MAX_ACT_BITS = 8  # the integer GEMM takes uint8 activations


@dataclass
class QuantWeight:
    """One quantized weight: integer codes on a grid, and its scale."""

    codes: torch.Tensor      # integer codes, the weight's shape
    scale: torch.Tensor      # fp32 [1] or [rows, 1]
    bits: int
    qmin: int
    qmax: int
    quantizer: str = ""

    @property
    def per_channel(self) -> bool:
        return self.scale.numel() > 1

    @property
    def offset(self) -> int:
        """What packing adds to a code (2^(bits-1) for signed grids, as MatMulNBits)."""
        return 2 ** (self.bits - 1) if self.qmin < 0 else 0

    def dequantized(self) -> torch.Tensor:
        """codes * scale (fp32): the grid values the fake-quant forward uses."""
        return self.codes.float() * self.scale

    @classmethod
    def from_qparams(cls, codes: torch.Tensor, qp: QParams, quantizer: str = "") -> "QuantWeight":
        from qbert.quant.qparams import code_dtype

        if qp.zero_point.abs().max() != 0:
            raise ConfigError(f"{quantizer} weight grid has a non-zero zero point; only symmetric "
                              "weight grids are exported")
        bits = qp.bits if qp.threshold is None else 2  # ternary: 3 levels in 2 bits
        qmin, qmax = (-1, 1) if qp.threshold is not None else (qp.qmin, qp.qmax)
        return cls(codes=codes.to(code_dtype(qmin, qmax)), scale=qp.scale.float().reshape(-1, 1)
                   if qp.scale.numel() > 1 else qp.scale.float().reshape(1),
                   bits=int(bits), qmin=int(qmin), qmax=int(qmax), quantizer=quantizer)


@dataclass
class QuantInput:
    """The grid of a quantized Linear's input (activation)."""

    scale: torch.Tensor      # fp32 [1]
    bits: int
    signed: bool
    qmin: int
    qmax: int
    quantizer: str = ""

    def qparams(self) -> QParams:
        import torch

        from qbert.quant.qparams import QParams

        return QParams(scale=self.scale.float().reshape(1), zero_point=torch.zeros(1, dtype=torch.int32),
                       qmin=self.qmin, qmax=self.qmax, axis=None, bits=self.bits, signed=self.signed,
                       restricted=self.signed and self.qmin == -self.qmax)

    @classmethod
    def from_qparams(cls, qp: QParams, quantizer: str = "") -> "QuantInput":
        if qp.scale.numel() != 1:
            raise ConfigError(f"{quantizer} activation quantizer is per channel; only per-tensor "
                              "activation grids are exported")
        return cls(scale=qp.scale.float().reshape(1), bits=int(qp.bits), signed=bool(qp.signed),
                   qmin=int(qp.qmin), qmax=int(qp.qmax), quantizer=quantizer)


@dataclass
class ExportedModel:
    """An exported encoder + classification head: architecture, tensors and grids."""

    arch: Dict[str, Any]
    fp: Dict[str, torch.Tensor] = field(default_factory=dict)       # fp32 tensors by name
    weights: Dict[str, QuantWeight] = field(default_factory=dict)   # quantized weights by name
    inputs: Dict[str, QuantInput] = field(default_factory=dict)     # by Linear module name
    quantization: Dict[str, Any] = field(default_factory=dict)
    files: Dict[str, Any] = field(default_factory=dict)
    masks: Dict[str, torch.Tensor] = field(default_factory=dict)    # 2:4 masks (bool) by weight name

    def validate(self) -> "ExportedModel":
        for name, q in self.inputs.items():
            if q.bits > MAX_ACT_BITS:
                raise ConfigError(f"{name}: activation bits {q.bits} are above {MAX_ACT_BITS}; the "
                                  "integer model takes at most 8-bit activations")
        for name, w in self.weights.items():
            if not 2 <= w.bits <= 8:
                raise ConfigError(f"{name}: weight bits {w.bits} outside 2..8")
        for name, mask in self.masks.items():
            if name not in self.weights and name not in self.fp:
                raise ConfigError(f"{name}: a 2:4 mask for a tensor the export does not have")
            if not compact_2to4(mask):
                raise ConfigError(f"{name}: mask {tuple(mask.shape)} is not 2:4 along rows of a multiple "
                                  "of 8 inputs; it cannot be stored compactly")
        return self

    def weight(self, name: str) -> torch.Tensor:
        """The fp32 tensor ``name`` (dequantized when quantized)."""
        if name in self.weights:
            return self.weights[name].dequantized()
        if name in self.fp:
            return self.fp[name]
        raise DataError(f"the export has no tensor {name!r}")

    def has(self, name: str) -> bool:
        return name in self.weights or name in self.fp

    @property
    def quantized(self) -> bool:
        return bool(self.weights)

    # ------------------------------------------------------------------ io
    def tensors(self, compact: bool = True) -> Dict[str, torch.Tensor]:
        """What model.safetensors holds (see module docstring); ``compact=False``: 2:4
        weights stored dense (only to measure what the compact form saves)."""
        import torch

        from qbert.sparse.packing import pack_2to4

        masks = self.masks if compact else {}
        out = {k: v.detach().float().contiguous() for k, v in self.fp.items() if k not in masks}
        for name in self.fp.keys() & masks.keys():
            values, index = pack_2to4(self.fp[name].detach().float(), masks[name])
            out[name + ".sparse_values"], out[name + ".sparse_index"] = values.contiguous(), index
        for name, w in self.weights.items():
            codes = w.codes
            if name in masks:
                codes, out[name + ".sparse_index"] = pack_2to4(codes, masks[name])
            out[name + ".qcodes"] = torch.from_numpy(packing.pack(codes.numpy(), w.bits, w.offset))
            out[name + ".qscale"] = w.scale.float().contiguous()
        for name, q in self.inputs.items():
            out[name + ".input_scale"] = q.scale.float().reshape(1).contiguous()
        return out

    def config(self) -> Dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "arch": self.arch,
            "quantization": self.quantization,
            "weights": {n: {"shape": list(w.codes.shape), "bits": w.bits, "offset": w.offset,
                            "qmin": w.qmin, "qmax": w.qmax, "per_channel": w.per_channel,
                            "quantizer": w.quantizer} for n, w in self.weights.items()},
            "activations": {n: {"bits": q.bits, "signed": q.signed, "qmin": q.qmin, "qmax": q.qmax,
                                "quantizer": q.quantizer} for n, q in self.inputs.items()},
            "files": self.files,
            "sparse": {n: {"pattern": "2:4", "shape": list(m.shape)} for n, m in self.masks.items()},
        }

    def sparse_bytes(self) -> Tuple[int, int]:
        """(bytes of the 2:4 weights as stored, bytes they would take stored dense)."""
        names = set(self.masks)

        def size(tensors):
            return sum(t.numel() * t.element_size() for k, t in tensors.items()
                       if k.rpartition(".")[0] in names or k in names)

        return size(self.tensors()), size(self.tensors(compact=False))

    def save(self, directory: str) -> None:
        """Write model.safetensors and config.json into an existing ``directory``."""
        from safetensors.torch import save_file

        self.validate()
        save_file(self.tensors(), os.path.join(directory, WEIGHTS), metadata={"format": FORMAT})
        with open(os.path.join(directory, CONFIG), "w", encoding="utf-8") as f:
            json.dump(self.config(), f, indent=1)
            f.write("\n")


def read_config(directory: str) -> Dict[str, Any]:
    """config.json of an export folder, checked to be one (DataError otherwise)."""
    path = os.path.join(directory, CONFIG)
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: no such folder (a qbert-export output folder is needed)")
    if not os.path.isfile(path):
        raise DataError(f"{directory}: no {CONFIG}; is it a qbert-export output folder?")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(f"{path}: not a qbert-export config (no \"format\": \"{FORMAT}\")")
    if config.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {config.get('format_version')} is not "
                        f"{FORMAT_VERSION}; re-export with this version of qbert-export")
    return config


def load(directory: str) -> ExportedModel:
    """The :class:`ExportedModel` of an export folder (safetensors + config.json)."""
    import torch
    from safetensors.torch import load_file

    config = read_config(directory)
    path = os.path.join(directory, WEIGHTS)
    if not os.path.isfile(path):
        raise DataError(f"{directory}: no {WEIGHTS}; is it a qbert-export output folder?")
    try:
        tensors = load_file(path, device="cpu")
    except Exception as e:  # noqa: BLE001 - truncated / not safetensors
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {str(e)[:200]})") from None
    from qbert.sparse.packing import unpack_2to4

    model = ExportedModel(arch=config["arch"], quantization=config.get("quantization", {}),
                          files=config.get("files", {}))
    sparse = config.get("sparse", {})
    index = {}
    try:
        for name, spec in sparse.items():
            rows, cols = spec["shape"]
            index[name] = tensors.pop(name + ".sparse_index")
            model.masks[name] = unpack_2to4(torch.ones(rows, cols // 2, dtype=torch.bool), index[name], cols)
            if name not in config["weights"]:
                model.fp[name] = unpack_2to4(tensors.pop(name + ".sparse_values"), index[name], cols)
        for name, spec in config["weights"].items():
            shape = tuple(spec["shape"])
            stored = (shape[0], shape[1] // 2) if name in sparse else shape
            codes = torch.from_numpy(packing.unpack(tensors.pop(name + ".qcodes").numpy(), spec["bits"],
                                                    int(np.prod(stored)), spec["offset"],
                                                    dtype=np.int8).reshape(stored))
            if name in sparse:
                codes = unpack_2to4(codes, index[name], shape[1])
            model.weights[name] = QuantWeight(
                codes=codes,
                scale=tensors.pop(name + ".qscale"), bits=spec["bits"], qmin=spec["qmin"],
                qmax=spec["qmax"], quantizer=spec.get("quantizer", ""))
        for name, spec in config["activations"].items():
            model.inputs[name] = QuantInput(scale=tensors.pop(name + ".input_scale"), bits=spec["bits"],
                                            signed=spec["signed"], qmin=spec["qmin"], qmax=spec["qmax"],
                                            quantizer=spec.get("quantizer", ""))
    except KeyError as e:
        raise DataError(f"{path}: tensor {e} named by {CONFIG} is missing") from None
    except ConfigError as e:  # packed sizes that do not fit the shapes in config.json
        raise DataError(f"{path}: {e.message}") from None
    model.fp.update(tensors)
    return model.validate()


def compact_2to4(mask) -> bool:
    """Whether ``mask`` can be stored compactly: 2-D, inputs a multiple of 8, exactly 2 kept
    of every 4 consecutive inputs of each row."""
    from qbert.sparse.masks import is_2to4

    return mask.dim() == 2 and mask.size(1) % 8 == 0 and bool(is_2to4(mask))


@contextmanager
def staged_dir(out_dir: str, force: bool = False) -> Iterator[str]:
    """A temporary folder next to ``out_dir``, renamed to ``out_dir`` when the block succeeds
    and removed when it fails: ``out_dir`` ends complete or untouched. An existing non-empty
    ``out_dir`` is refused unless ``force`` (then replaced only after success)."""
    check_out_dir(out_dir, force)
    target = os.path.abspath(out_dir)
    parent = os.path.dirname(target)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".partial-", dir=parent)
    try:
        yield tmp
        if os.path.lexists(target):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".old-", dir=parent)
            os.rename(target, os.path.join(old, "x"))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out_dir(out_dir: str, force: bool = False) -> None:
    """ConfigError for an output folder that exists and is not empty (unless ``force``)."""
    target = os.path.abspath(out_dir)
    if os.path.lexists(target):
        if not os.path.isdir(target):
            raise ConfigError(f"--out {out_dir} exists and is not a folder")
        if os.listdir(target) and not force:
            raise ConfigError(f"--out {out_dir} exists and is not empty; give a new folder or "
                              "--force to replace it (nothing was written)")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise ConfigError(f"--out {out_dir}: parent folder {parent} does not exist")
