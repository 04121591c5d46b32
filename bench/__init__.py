"""Benchmarks behind `make bench`; the numbers land in BENCHMARKS.md."""
