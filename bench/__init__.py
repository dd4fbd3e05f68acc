"""Benchmarks of the controller: detection quality, scale and CLI start-up."""
