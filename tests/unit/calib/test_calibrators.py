"""Calibrator math (qbert.calib.calibrators) against hand-computed amax values and against
a line-by-line transliteration of NVIDIA pytorch-quantization's histogram code."""
from collections import Counter

import numpy as np
import pytest
import torch

from qbert.calib.calibrators import (
    HistogramCalibrator,
    MaxCalibrator,
    amax_entropy,
    amax_mse,
    amax_percentile,
    check_percentile,
    weight_amax,
)
from qbert.errors import ConfigError


def ramp_histogram():
    """Values 0, 1, ..., 2048: width 1, bin k holds k (k < 2047), bin 2047 holds 2047 and 2048."""
    cal = HistogramCalibrator()
    cal.collect(torch.arange(0, 2049, dtype=torch.float32))
    return cal


# ------------------------------------------------------------------------------ max
def test_max_running_abs_max_per_tensor_and_per_row():
    cal = MaxCalibrator()
    cal.collect(torch.tensor([1.0, -3.0, 2.0]))
    cal.collect(torch.tensor([0.5, 2.5]))
    assert cal.compute_amax().item() == 3.0
    rows = MaxCalibrator(axis=0)
    rows.collect(torch.tensor([[1.0, -4.0], [0.5, 0.25]]))
    rows.collect(torch.tensor([[2.0, 0.0], [-0.75, 0.0]]))
    assert rows.compute_amax().tolist() == [4.0, 0.75]


# ------------------------------------------------------------------------------ histogram
def test_first_batch_fixes_2048_bins_on_0_max():
    cal = ramp_histogram()
    hist, edges = cal.hist, cal.edges
    assert len(hist) == 2048 and cal.width == 1.0 and edges[-1] == 2048.0
    assert hist[:2047].tolist() == [1] * 2047 and hist[2047] == 2 and hist.sum() == 2049


def test_range_grows_at_the_first_batch_width_and_never_shrinks():
    cal = ramp_histogram()
    cal.collect(torch.tensor([3000.2, -5.5]))       # |x|: 5.5 -> bin 5, 3000.2 -> bin 3000
    hist = cal.hist
    assert cal.width == 1.0 and len(hist) == 3001   # ceil(3000.2 / 1) bins of width 1
    assert hist[5] == 2 and hist[3000] == 1 and hist[2048:3000].sum() == 0 and hist.sum() == 2051
    cal.collect(torch.tensor([0.5]))                 # smaller batch: same range
    assert len(cal.hist) == 3001 and cal.hist[0] == 2
    # the CDF reaches 100% only in the last bin: amax = its left edge, 3000
    assert cal.compute_amax("percentile", percentile=100) == 3000.0
    # 2050 of 2052 values are <= 2048: p = 99.9 -> first k with cdf >= 0.999 is 2047
    assert cal.compute_amax("percentile", percentile=99.9) == 2047.0


def test_percentile_is_the_left_edge_where_the_cdf_crosses_p():
    cal = ramp_histogram()
    # cdf_k = (k + 1) / 2049 >= 0.5  <=>  k >= 1023.5
    assert cal.compute_amax("percentile", percentile=50) == 1024.0
    assert amax_percentile(cal.hist, cal.edges, 50) == 1024.0
    # (k + 1) / 2049 >= 0.9999 only for the last bin (k = 2047: cdf 1)
    assert cal.compute_amax("percentile", percentile=99.99) == 2047.0


def test_percentile_uniform_and_gaussian_with_outliers():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(1_000_000, generator=g)
    cal = HistogramCalibrator()
    cal.collect(u)
    width = cal.width
    assert abs(cal.compute_amax("percentile", percentile=99) - 0.99) <= 2 * width + 1e-3
    x = torch.cat([torch.randn(1_000_000, generator=g), torch.full((10,), 100.0)])
    m = MaxCalibrator()
    m.collect(x)
    assert m.compute_amax().item() == 100.0
    cal = HistogramCalibrator()
    cal.collect(x)
    # |N(0,1)| at 99.99%: z_{0.99995} = 3.8906; the 10 outliers are 1e-5 of the mass
    assert abs(cal.compute_amax("percentile", percentile=99.99) - 3.8906) < cal.width + 0.02
    # mse weighs the outliers' clipping error against the rounding error of the bulk: at 8
    # bits it keeps part of their range, at 4 bits (coarser steps) much less
    mse8, mse4 = cal.compute_amax("mse", bits=8), cal.compute_amax("mse", bits=4)
    assert 3.8906 < mse4 < mse8 < 100.0


def test_percentile_range_is_checked():
    for bad in (0, -1, 100.5, "x", float("nan")):
        with pytest.raises(ConfigError, match="--percentile"):
            check_percentile(bad)
    assert check_percentile("99.999") == 99.999 and check_percentile(100) == 100.0


def test_mse_two_point_masses_at_two_bits_hand_computed():
    """2 bits signed: grid {0, a}. Masses at centres 200.5 and 1000.5 (width 1). For a <= 401
    both round to a: error (a-200.5)^2 + (a-1000.5)^2 >= 200^2 + 600^2 at a = 400.5; for a in
    (401, 2001] 200.5 rounds to 0: 200.5^2 + (a - 1000.5)^2, least at a = 1000.5."""
    hist = np.zeros(2048, dtype=np.int64)
    hist[200] = hist[1000] = 1
    edges = np.arange(2049, dtype=np.float64)
    assert amax_mse(hist, edges, bits=2) == 1000.5
    # a single mass: the candidate equal to it is exact at any bit width
    hist = np.zeros(2048, dtype=np.int64)
    hist[700] = 5
    assert amax_mse(hist, edges, bits=2) == 700.5


def _nvidia_mse(calib_hist, calib_bin_edges, num_bits, unsigned, stride=1, start_bin=128):
    """pytorch-quantization _compute_amax_mse (float64, our grid s = amax / Qp)."""
    counts = np.asarray(calib_hist, dtype=np.float64)
    centers = (calib_bin_edges[1:] + calib_bin_edges[:-1]) / 2
    qp = 2 ** (num_bits - 1 + int(unsigned)) - 1
    mses, arguments = [], []
    for i in range(start_bin, len(centers), stride):
        s = centers[i] / qp
        q = np.clip(np.round(centers / s), 0, qp) * s
        mses.append(((q - centers) ** 2 * counts).mean())
        arguments.append(i)
    return centers[arguments[int(np.argmin(mses))]]


def _nvidia_entropy(calib_hist, calib_bin_edges, num_bits, unsigned, stride=1, start_bin=128):
    """pytorch-quantization _compute_amax_entropy, transliterated (scipy's entropy)."""
    from scipy.stats import entropy

    bins = np.array(calib_hist[:])
    bins[0] = bins[1]
    divergences, arguments = [], []
    nbins = 1 << (num_bits - 1 + int(unsigned))
    new_density_counts = np.zeros(nbins, dtype=np.float64)
    for i in range(start_bin, len(bins) + 1, stride):
        new_density_counts.fill(0)
        space = np.linspace(0, i, num=nbins + 1)
        digitized_space = np.digitize(range(i), space) - 1
        digitized_space[bins[:i] == 0] = -1
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density_counts[digitized] += bins[idx]
        counter = Counter(digitized_space)
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val
        new_density = np.zeros(i, dtype=np.float64)
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density[idx] = new_density_counts[digitized]
        reference_density = np.array(bins[:len(digitized_space)], dtype=np.float64)
        reference_density[-1] += np.sum(bins[i:])
        divergences.append(entropy(reference_density, new_density))
        arguments.append(i)
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return calib_bin_edges[last_argmin * stride + start_bin]


@pytest.fixture(scope="module")
def gauss_hist():
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(200_000, generator=g), torch.full((5,), 12.0)])
    cal = HistogramCalibrator(num_bins=512)
    cal.collect(x)
    return cal.hist, cal.edges


@pytest.mark.parametrize("bits,unsigned", [(8, False), (4, False), (4, True)])
def test_mse_and_entropy_match_nvidia(gauss_hist, bits, unsigned):
    hist, edges = gauss_hist
    assert amax_mse(hist, edges, bits, unsigned) == pytest.approx(_nvidia_mse(hist, edges, bits, unsigned), rel=1e-12)
    assert amax_entropy(hist, edges, bits, unsigned) == _nvidia_entropy(hist, edges, bits, unsigned)


def test_entropy_of_a_flat_histogram_keeps_the_whole_range():
    """Uniform counts: at i = len(h) P is flat and Q reproduces it (KL 0); any smaller i puts
    the clipped tail in P's last bin (KL > 0). amax = the last edge."""
    hist = np.full(2048, 7, dtype=np.int64)
    edges = np.arange(2049, dtype=np.float64) * 0.5
    assert amax_entropy(hist, edges, bits=8) == 1024.0


# ------------------------------------------------------------------------------ weights
def test_weight_amax_max_and_mse_per_tensor_and_per_row():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 300, generator=g)
    w[2, 7] = 9.0
    assert weight_amax(w, "max", 8).item() == 9.0
    assert torch.equal(weight_amax(w, "max", 8, per_channel=True), w.abs().amax(dim=1))
    rows = weight_amax(w, "mse", 4, per_channel=True)
    for r in range(6):  # the per-row matrix path equals one histogram per row
        expected = weight_amax(w[r:r + 1], "mse", 4)
        assert rows[r].item() == pytest.approx(expected.item(), rel=1e-5)
    assert rows[2] < 9.0  # the outlier is clipped at 4 bits
    with pytest.raises(ConfigError, match="--weight-calibrator"):
        weight_amax(w, "entropy", 8)
