"""Benchmark harness: qso-inject-v1 detection metrics and throughput."""
