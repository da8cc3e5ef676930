"""Benchmarks: every loader side by side against the naive per-file loader."""
