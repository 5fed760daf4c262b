"""Experiment runner (QAT cells, FP baselines, families) and the tables made from their runs."""
