"""Evaluation: likelihoods with their SE and kind, sample quality, the lm-eval harness adapter, comparisons."""
