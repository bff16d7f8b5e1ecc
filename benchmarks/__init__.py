"""Benchmarks that print their numbers (``make bench``); never timed tests."""
