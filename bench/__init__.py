"""Benchmarks; see BENCHMARKS.md for how to run them and the results."""
