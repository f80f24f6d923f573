"""Benchmarks: `python -m bench` (or `make bench`). Timings live here, never in tests."""
