"""Post-training quantization (PTQ) calibration, fairseq-free.

``calibrate(model, forward_loop, method=..., percentile=..., weight_method=...)`` sets every
quantizer of a model from calibrated ranges (NVIDIA pytorch-quantization math:
:mod:`qbert.calib.calibrators`); see :mod:`qbert.calib.api`.
"""
from .api import CalibrationReport, QuantizerCalibration, calibrate, calibrate_batches, find_quantizers
from .calibrators import (
                          ACT_METHODS,
                          DEFAULT_PERCENTILE,
                          WEIGHT_METHODS,
                          HistogramCalibrator,
                          MaxCalibrator,
                          amax_entropy,
                          amax_mse,
                          amax_percentile,
                          weight_amax,
)

__all__ = ["calibrate", "calibrate_batches", "find_quantizers", "CalibrationReport",
           "QuantizerCalibration", "MaxCalibrator", "HistogramCalibrator", "amax_percentile",
           "amax_mse", "amax_entropy", "weight_amax", "ACT_METHODS", "WEIGHT_METHODS",
           "DEFAULT_PERCENTILE"]
