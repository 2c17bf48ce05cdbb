"""Evaluation of frozen features (kNN, linear probes)."""
