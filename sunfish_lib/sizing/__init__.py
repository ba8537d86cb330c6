"""Sizing without torch: parameter and FLOP counts, memory per GPU, fits/does-not-fit estimates."""
