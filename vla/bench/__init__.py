"""Benchmarks behind `vla bench ...`: each returns a JSON-able dict of measured figures."""
