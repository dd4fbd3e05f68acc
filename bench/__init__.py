"""Benchmarks of the controller: detection quality and scale (issue #9)."""
