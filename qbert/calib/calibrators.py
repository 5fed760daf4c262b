"""Range calibrators for post-training quantization (numpy / torch only, no fairseq).

The math is that of NVIDIA pytorch-quantization (TensorRT ``tools/pytorch-quantization``,
``pytorch_quantization/calib/max.py`` and ``calib/histogram.py``), which TensorRT's own
INT8 entropy calibration follows. Every calibrator observes |x| and returns ``amax``, the
value that the quantizer's largest grid point represents (step s = amax / Qp).

* :class:`MaxCalibrator`: amax = running max of |x| over all batches, per tensor or per
  output row (``axis=0``, weights).
* :class:`HistogramCalibrator`: histogram of |x| with 2048 bins on [0, max|x_1|] for the
  first batch; the bin width w = max|x_1| / 2048 stays fixed and the range grows at that
  width (ceil(max|x_t| / w) bins) when a later batch exceeds it; it never shrinks.
  Counts are exact integers (int64). From the histogram h with edges e_k = k * w:

  - :func:`amax_percentile`: cdf_k = sum_{j<=k} h_j / sum h; amax = e_k for the first k with
    cdf_k >= p / 100 (the *left* edge of the bin where the CDF crosses p).
  - :func:`amax_mse`: candidates amax_i = c_i (bin centres c_k = (e_k + e_{k+1}) / 2) for
    i = 128, 129, ...; amax = argmin_i sum_k h_k (Q(c_k; amax_i) - c_k)^2 with
    Q(c; a) = clamp(round(c / s), 0, Qp) * s, s = a / Qp (the quantizer's grid and bits).
  - :func:`amax_entropy`: TensorRT's KL-divergence search (see its docstring).

* :func:`weight_amax`: ``max`` or ``mse`` of a weight, per tensor or per row, from one
  histogram of the weight (NVIDIA's ``calibrate_weights``).

Differences from pytorch-quantization, all deliberate: bin indices are computed as
floor(|x| / w) in float64 and counted exactly (NVIDIA's ``torch.histc`` counts in float32,
which loses counts above 2^24 per bin, and re-derives the grown width from the last edge);
the mse error is evaluated on our quantizer's grid (s = amax / Qp) in float64.
"""
import math
from typing import Optional, Sequence

import numpy as np
import torch

from qbert.errors import ConfigError

NUM_BINS = 2048
START_BIN = 128
ACT_METHODS = ("max", "percentile", "mse", "entropy")
WEIGHT_METHODS = ("max", "mse")
DEFAULT_PERCENTILE = 99.99


def check_percentile(percentile: float, flag: str = "--percentile") -> float:
    """``percentile`` as a float in (0, 100]; :class:`ConfigError` naming ``flag`` otherwise."""
    try:
        p = float(percentile)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be a number in (0, 100], got {percentile!r}") from None
    if not (0.0 < p <= 100.0) or math.isnan(p):
        raise ConfigError(f"{flag} must be in (0, 100], got {percentile!r}")
    return p


def check_method(method: str, allowed: Sequence[str], flag: str) -> str:
    if method not in allowed:
        raise ConfigError(f"{flag}: unknown calibrator {method!r}; allowed: {', '.join(allowed)}")
    return method


def grid_max(bits: int, unsigned: bool) -> int:
    """Qp, the largest grid index: 2^(b-1) - 1 signed, 2^b - 1 unsigned (NVIDIA's max_bound)."""
    return 2 ** (bits - 1 + int(unsigned)) - 1


# ----------------------------------------------------------------------------------------
# collectors
# ----------------------------------------------------------------------------------------


class MaxCalibrator:
    """Running max of |x| (pytorch-quantization ``MaxCalibrator``).

    ``axis=None``: one amax for the tensor; ``axis=0``: one per index of dim 0 (per output
    row of a weight), the max over every other dim.
    """

    def __init__(self, axis: Optional[int] = None):
        self.axis = axis
        self._amax: Optional[torch.Tensor] = None

    def collect(self, x: torch.Tensor) -> None:
        a = x.detach().float().abs()
        if self.axis is None:
            local = a.max()
        else:
            local = a.movedim(self.axis, 0).reshape(a.shape[self.axis], -1).amax(dim=1)
        if self._amax is None:
            self._amax = local.clone()
        else:
            if local.shape != self._amax.shape:
                raise ValueError(f"amax shape changed from {tuple(self._amax.shape)} to {tuple(local.shape)}")
            torch.maximum(self._amax, local, out=self._amax)

    def compute_amax(self) -> Optional[torch.Tensor]:
        return None if self._amax is None else self._amax.clone()

    def reset(self) -> None:
        self._amax = None


class HistogramCalibrator:
    """Histogram of |x| (pytorch-quantization ``HistogramCalibrator``, per tensor).

    First batch: ``num_bins`` bins of width w = max|x| / num_bins on [0, max|x|] (a value
    equal to the max falls in the last bin). Later batches: when max|x| exceeds the
    current range, the range grows to ceil(max|x| / w) bins of the same width w.
    ``hist`` (int64) and ``edges`` (float64, edges[k] = k * w) are numpy arrays.
    """

    def __init__(self, num_bins: int = NUM_BINS, skip_zeros: bool = False):
        if num_bins < 1:
            raise ConfigError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = int(num_bins)
        self.skip_zeros = bool(skip_zeros)
        self.width: Optional[float] = None
        self._hist: Optional[torch.Tensor] = None
        self._zeros = 0  # |x| == 0 seen before the first nonzero batch fixed the width

    def collect(self, x: torch.Tensor) -> None:
        a = x.detach().reshape(-1).abs().double()
        if self.skip_zeros:
            a = a[a != 0]
        if a.numel() == 0:
            return
        x_max = float(a.max())
        if self.width is None:
            if x_max == 0.0:
                self._zeros += a.numel()
                return
            self.width = x_max / self.num_bins
            self._hist = torch.zeros(self.num_bins, dtype=torch.long)
            self._hist[0] += self._zeros
        n = self._hist.numel()
        if x_max > n * self.width:
            n = int(math.ceil(x_max / self.width))
            grown = torch.zeros(n, dtype=torch.long)
            grown[:self._hist.numel()] = self._hist
            self._hist = grown
        idx = torch.floor(a / self.width).long().clamp_(0, n - 1)
        self._hist += torch.bincount(idx, minlength=n)

    @property
    def hist(self) -> Optional[np.ndarray]:
        return None if self._hist is None else self._hist.numpy().copy()

    @property
    def edges(self) -> Optional[np.ndarray]:
        if self._hist is None:
            return None
        return np.arange(self._hist.numel() + 1, dtype=np.float64) * self.width

    def compute_amax(self, method: str, *, bits: int = 8, unsigned: bool = False,
                     percentile: float = DEFAULT_PERCENTILE, start_bin: int = START_BIN,
                     stride: int = 1) -> Optional[float]:
        """amax by ``method`` (percentile, mse, entropy); None before any nonzero data."""
        if self._hist is None:
            return None if self._zeros == 0 else 0.0
        hist, edges = self.hist, self.edges
        if method == "percentile":
            return amax_percentile(hist, edges, percentile)
        if method == "mse":
            return amax_mse(hist, edges, bits, unsigned, start_bin=start_bin, stride=stride)
        if method == "entropy":
            return amax_entropy(hist, edges, bits, unsigned, start_bin=start_bin, stride=stride)
        raise ConfigError(f"unknown histogram calibration method {method!r}; allowed: percentile, mse, entropy")

    def reset(self) -> None:
        self.width, self._hist, self._zeros = None, None, 0


# ----------------------------------------------------------------------------------------
# amax from a histogram
# ----------------------------------------------------------------------------------------


def amax_percentile(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """Left edge of the bin where the CDF of ``hist`` first reaches percentile / 100
    (pytorch-quantization ``_compute_amax_percentile``: ``edges[searchsorted(cdf, p/100)]``)."""
    p = check_percentile(percentile, "percentile")
    hist = np.asarray(hist)
    cdf = np.cumsum(hist / hist.sum())
    idx = int(np.searchsorted(cdf, p / 100))
    return float(edges[min(idx, len(edges) - 1)])


def _mse_errors(counts: np.ndarray, centres: np.ndarray, cand: np.ndarray, qmax: int,
                chunk: int = 256) -> np.ndarray:
    """err[r, j] = sum_k counts[r, k] * (Q(centres[k]; cand[j]) - centres[k])^2 (float64),
    Q on the grid [0, qmax] with step cand[j] / qmax."""
    counts = np.atleast_2d(counts).astype(np.float64)
    out = np.empty((counts.shape[0], len(cand)), dtype=np.float64)
    for j0 in range(0, len(cand), chunk):
        a = cand[j0:j0 + chunk, None]
        s = a / qmax
        q = np.clip(np.round(centres[None, :] / s), 0, qmax) * s
        e = (q - centres[None, :]) ** 2                  # [chunk, N]
        out[:, j0:j0 + chunk] = counts @ e.T
    return out


def amax_mse(hist: np.ndarray, edges: np.ndarray, bits: int, unsigned: bool = False,
             start_bin: int = START_BIN, stride: int = 1) -> float:
    """The bin centre c_i (i >= start_bin) minimising sum_k h_k (Q(c_k; c_i) - c_k)^2
    (pytorch-quantization ``_compute_amax_mse``; the first minimum wins)."""
    edges = np.asarray(edges, dtype=np.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    idx = np.arange(start_bin, len(centres), stride)
    if len(idx) == 0:
        return float(centres[-1])
    err = _mse_errors(np.asarray(hist), centres, centres[idx], grid_max(bits, unsigned))[0]
    return float(centres[idx[int(np.argmin(err))]])


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """scipy.stats.entropy(p, q): KL(p || q) of the normalised vectors (natural log)."""
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return float("nan")
    p = p / ps
    q = q / qs
    mask = p > 0
    if np.any(q[mask] == 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def amax_entropy(hist: np.ndarray, edges: np.ndarray, bits: int, unsigned: bool = False,
                 start_bin: int = START_BIN, stride: int = 1) -> float:
    """TensorRT's KL-divergence calibration (pytorch-quantization ``_compute_amax_entropy``).

    With h the histogram (h_0 replaced by h_1, as NVIDIA does, so a spike of exact zeros
    does not dominate) and n = 2^(b-1+unsigned) quantization bins, for every i from
    ``start_bin`` to len(h) (inclusive):

    * P = h[:i] with the clipped tail sum(h[i:]) added to P[i-1];
    * Q: bin j < i belongs to group floor-digitize(j) of linspace(0, i, n + 1); each group's
      mass sum(h[j]) is spread evenly over its non-empty bins (empty bins stay 0);
    * D_i = KL(P || Q) of the normalised vectors.

    amax = edges[i*] for the *last* i* minimising D_i.
    """
    bins = np.asarray(hist, dtype=np.float64).copy()
    if len(bins) > 1:
        bins[0] = bins[1]
    nq = 1 << (bits - 1 + int(unsigned))
    divergences, arguments = [], []
    suffix = np.concatenate([np.cumsum(bins[::-1])[::-1], [0.0]])  # suffix[i] = sum(bins[i:])
    for i in range(start_bin, len(bins) + 1, stride):
        space = np.linspace(0, i, num=nq + 1)
        dig = np.digitize(np.arange(i), space) - 1
        h = bins[:i]
        nz = h != 0
        sums = np.bincount(dig[nz], weights=h[nz], minlength=nq)
        cnts = np.bincount(dig[nz], minlength=nq)
        q = np.zeros(i, dtype=np.float64)
        q[nz] = sums[dig[nz]] / cnts[dig[nz]]
        p = h.copy()
        p[-1] += suffix[i]
        divergences.append(_kl(p, q))
        arguments.append(i)
    if not divergences:
        return float(edges[-1])
    div = np.array(divergences)
    last_argmin = len(div) - 1 - int(np.argmin(div[::-1]))
    return float(edges[arguments[last_argmin]])


# ----------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------


def weight_amax(weight: torch.Tensor, method: str, bits: int, *, per_channel: bool = False,
                unsigned: bool = False, num_bins: int = NUM_BINS,
                start_bin: int = START_BIN) -> torch.Tensor:
    """amax of a weight: shape [] per tensor, [rows] per channel (rows = dim 0).

    ``max``: max|w| (per row). ``mse``: :func:`amax_mse` of the histogram of |w| on
    [0, max|w|] with ``num_bins`` bins (per row: one histogram per row, NVIDIA's
    ``calibrate_weights(method="mse", perchannel=True)``). Per row the error is computed at
    unit scale (centres (k + 1/2) / num_bins, the row's max factored out: the error scales
    by max^2 and the argmin does not move), as one matrix product for all rows.
    """
    check_method(method, WEIGHT_METHODS, "--weight-calibrator")
    w = weight.detach().float()
    rows = w.reshape(w.shape[0], -1).abs() if per_channel else w.reshape(1, -1).abs()
    m = rows.amax(dim=1)
    if method == "max":
        return m if per_channel else m[0]
    if not per_channel:
        cal = HistogramCalibrator(num_bins)
        cal.collect(rows)
        amax = cal.compute_amax("mse", bits=bits, unsigned=unsigned, start_bin=start_bin)
        return torch.tensor(amax if amax is not None else 0.0, dtype=torch.float32)
    md = m.double().clamp_min(torch.finfo(torch.float64).tiny)
    idx = torch.floor(rows.double() / (md[:, None] / num_bins)).long().clamp_(0, num_bins - 1)
    counts = torch.zeros(rows.shape[0], num_bins, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    centres = (np.arange(num_bins, dtype=np.float64) + 0.5) / num_bins
    cand = np.arange(start_bin, num_bins)
    qmax = grid_max(bits, unsigned)
    best = np.empty(rows.shape[0], dtype=np.int64)
    for r0 in range(0, rows.shape[0], 1024):
        err = _mse_errors(counts[r0:r0 + 1024].numpy(), centres, centres[cand], qmax)
        best[r0:r0 + 1024] = cand[np.argmin(err, axis=1)]
    amax = torch.from_numpy(centres[best]) * m.double()
    return amax.float()
