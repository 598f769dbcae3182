"""Benchmarks: `python bench/sfu_fanout.py --help`."""
