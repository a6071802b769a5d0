"""Benchmarks for migrator: see benchmarks/run.py and docs/BENCHMARKS.md."""
